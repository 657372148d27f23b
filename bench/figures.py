"""The seven figures of issue 9, each a function ``Bench -> list[Row]``.

Every figure measures each system in the same run, on the same machine, with the same load
generator. A system that cannot be measured yet gets a row that says why (for fleetgate: which
issue it waits for) instead of a number. Figure numbers follow the issue; `FIGURES` lists them
in the order they run (cheapest and most wanted first).
"""

from __future__ import annotations

import contextlib
import functools
import select
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import mqttwire, servers
from bench.loadgen import LoadError, LoadRun, LoadSpec, client_context
from bench.pki import (
    Pki,
    PkiError,
    crl_path,
    fleet_ca_command,
    fleet_ca_env,
    openssl_device_loop,
    revoke,
)
from bench.results import Row
from bench.servers import Server, Unavailable

BROKERS = ("fleetgate", "mosquitto", "amqtt")


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big each figure is: `full` for the record, `quick` for the smoke test."""

    ca_fleet: int
    ca_openssl: int
    connects: int
    publish_seconds: float
    publish_clients: tuple[int, ...]
    stored_seconds: float
    overload_seconds: float
    idle_connections: tuple[int, ...]
    revoke_wait: float
    devices: int

    @classmethod
    def full(cls) -> Sizes:
        return cls(ca_fleet=2000, ca_openssl=100, connects=2000, publish_seconds=5.0,
                   publish_clients=(10, 100), stored_seconds=3.0, overload_seconds=10.0,
                   idle_connections=(2000, 10000), revoke_wait=5.0, devices=20)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(ca_fleet=5, ca_openssl=3, connects=10, publish_seconds=0.3,
                   publish_clients=(2,), stored_seconds=0.3, overload_seconds=0.5,
                   idle_connections=(10,), revoke_wait=5.0, devices=4)


@dataclass
class Bench:
    """Everything a figure needs: certificates, cores, sizes, where to put files."""

    pki: Pki
    work: Path
    sizes: Sizes
    runs: int
    systems: tuple[str, ...]
    server_cpus: tuple[int, ...]
    loadgen_cpus: tuple[int, ...]
    log: Callable[[str], None] = print
    revoked: set[str] = field(default_factory=set)

    @property
    def workers(self) -> int:
        return max(1, len(self.loadgen_cpus))

    def spec(self, server: Server, mode: str, **kw: Any) -> LoadSpec:
        devices = tuple((str(d.cert), str(d.key)) for d in self.pki.devices
                        if d.uuid not in self.revoked)
        return LoadSpec(mode=mode, host="127.0.0.1", port=server.port, root=str(self.pki.root),
                        devices=devices, workers=self.workers, cpus=self.loadgen_cpus, **kw)

    @contextlib.contextmanager
    def server(self, system: str, **kw: Any) -> Iterator[Server]:
        """Start ``system`` pinned to the server cores; raises Unavailable with the reason."""
        if system == "mosquitto":
            cm = servers.mosquitto(self.pki, self.work, self.server_cpus, **kw)
        elif system == "amqtt":
            cm = servers.amqtt(self.pki, self.work, self.server_cpus)
        elif system == "fleetgate":
            cm = servers.fleetgate(self.pki, self.work, self.server_cpus)
        else:
            raise ValueError(system)
        with cm as server:
            yield server

    def wanted(self, system: str) -> bool:
        return system in self.systems


def _load_run(bench: Bench, server: Server, spec: LoadSpec, timeout: float) -> dict[str, Any]:
    """One measured window: the server's CPU seconds are read just outside it."""
    with LoadRun(spec) as run:
        run.wait_ready()
        cpu0 = server.cpu_seconds()
        run.go()
        result = run.wait_results(timeout)
        cpu = server.cpu_seconds() - cpu0
    busy = result.loadgen_cpu_s / (result.seconds * bench.workers) if result.seconds else 0.0
    out = result.as_dict()
    out.update(
        value=round(result.rate, 1),
        server_cpu_s=round(cpu, 2),
        per_cpu_s=round(result.ok / cpu, 1) if cpu > 0 else None,
        loadgen_busy=round(busy, 2),
    )
    if not server.alive():
        out["server_died"] = True
    return out


def _server_notes(row: Row, server: Server) -> None:
    row.notes.extend(n for n in server.notes if n not in row.notes)


def _note_saturation(row: Row) -> None:
    if any(r.get("loadgen_busy", 0) > 0.9 for r in row.runs):
        row.notes.append("load generator saturated in some runs: the figure is a lower bound")
    if any(r.get("failed") for r in row.runs):
        failed = sum(r.get("failed", 0) for r in row.runs)
        row.notes.append(f"{failed} operations failed over all runs (see runs[].errors)")
    if any(r.get("server_died") for r in row.runs):
        row.notes.append("the server died during a run")


def _per_system(bench: Bench, rows: dict[tuple[str, str], Row], systems: tuple[str, ...],
                cases: list[str], body: Callable[[Server, str, Row], None],
                **server_kw: Any) -> None:
    """Start each system once, measure every case on it, record why when it cannot."""
    for system in systems:
        if not bench.wanted(system):
            for case in cases:
                rows.pop((case, system), None)
            continue
        try:
            with bench.server(system, **server_kw) as server:
                for case in cases:
                    bench.log(f"  {system}: {case}")
                    row = rows[(case, system)]
                    _server_notes(row, server)
                    try:
                        body(server, case, row)
                    except (LoadError, Unavailable) as exc:
                        row.notes.append(f"stopped: {exc}")
                    _note_saturation(row)
        except Unavailable as exc:
            for case in cases:
                rows[(case, system)].unavailable = str(exc)


# ---------------------------------------------------------------------------------------------
# figure 6: CA bundles per second


def figure_ca(bench: Bench) -> list[Row]:
    s = bench.sizes
    fleet = Row("6", f"device bundles, --count {s.ca_fleet}", "fleet-ca", "bundles/s")
    loop = Row("6", f"device bundles, --count {s.ca_fleet}", "openssl shell loop", "bundles/s",
               notes=[f"{s.ca_openssl} bundles per run: key, CSR, sign, write, 3 openssl "
                      "processes per device"])
    for run in range(bench.runs):
        with tempfile.TemporaryDirectory(dir=bench.work) as tmp:
            out = Path(tmp) / "openssl"
            t, cpu = _timed_children(functools.partial(
                openssl_device_loop, bench.pki.issuing_cert, bench.pki.issuing_key,
                bench.pki.root, out, s.ca_openssl))
            made = _count_bundles(out)
            loop.add(value=round(made / t, 1), per_cpu_s=round(made / cpu, 1) if cpu else None,
                     bundles=made, seconds=round(t, 3), cpu_s=round(cpu, 2))
            if bench.pki.tool != "fleet-ca":
                fleet.unavailable = ("not yet available (needs issue 3): "
                                     f"{bench.pki.fallback_reason}")
                continue
            out = Path(tmp) / "fleet-ca"
            cmd = [str(fleet_ca_command()), "issue", "device", "--count", str(s.ca_fleet),
                   "--out", str(out)]
            try:
                t, cpu = _timed_children(functools.partial(
                    _check_call, cmd, fleet_ca_env(bench.pki.home)))
            except PkiError as exc:
                fleet.unavailable = f"fleet-ca issue device failed: {exc}"
                continue
            made = _count_bundles(out)
            fleet.add(value=round(made / t, 1), per_cpu_s=round(made / cpu, 1) if cpu else None,
                      bundles=made, seconds=round(t, 3), cpu_s=round(cpu, 2))
        bench.log(f"  run {run + 1}: openssl {loop.runs[-1]['value']}/s"
                  + (f", fleet-ca {fleet.runs[-1]['value']}/s" if fleet.runs else ""))
    return [fleet, loop]


def _check_call(cmd: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise PkiError(f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}")


def _timed_children(fn: Callable[[], None]) -> tuple[float, float]:
    """Wall seconds and child-process CPU seconds of ``fn``."""
    import resource

    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    fn()
    t = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return t, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def _count_bundles(out: Path) -> int:
    if not out.exists():
        return 0
    return sum(1 for d in out.iterdir() if (d / "device.crt").exists()
               and (d / "device.key").exists())


# ---------------------------------------------------------------------------------------------
# figure 1: full mTLS connects per second and per server CPU-second


def figure_connects(bench: Bench) -> list[Row]:
    cases = ["TLS 1.3", "TLS 1.2"]
    rows = {(c, s): Row("1", c, s, "connects/s") for c in cases for s in BROKERS}

    def body(server: Server, case: str, row: Row) -> None:
        spec = bench.spec(server, "connect", tls=case.split()[1], count=bench.sizes.connects)
        for _ in range(bench.runs):
            row.add(**_load_run(bench, server, spec, timeout=600))

    _per_system(bench, rows, BROKERS, cases, body)
    return list(rows.values())


# ---------------------------------------------------------------------------------------------
# figure 2: QoS 0 and QoS 1 publishes per second


def figure_publish(bench: Bench) -> list[Row]:
    cases = [f"QoS {q}, {c} clients" for q in (0, 1) for c in bench.sizes.publish_clients]
    rows = {(c, s): Row("2", c, s, "publishes/s",
                        notes=["100-byte payloads, window of 500 unanswered messages per "
                               "client; QoS 0 blocks of 50 end with a PINGREQ"])
            for c in cases for s in BROKERS}

    def body(server: Server, case: str, row: Row) -> None:
        qos = int(case.split()[1].rstrip(","))
        clients = int(case.split()[2])
        spec = bench.spec(server, "publish", qos=qos, clients=clients,
                          duration=bench.sizes.publish_seconds)
        for _ in range(bench.runs):
            row.add(**_load_run(bench, server, spec, timeout=bench.sizes.publish_seconds + 120))

    _per_system(bench, rows, BROKERS, cases, body)
    return list(rows.values())


# ---------------------------------------------------------------------------------------------
# figures 3 and 4: the do-it-yourself pipeline (mosquitto + paho subscriber + SQLite)


@contextlib.contextmanager
def pipeline(bench: Bench, *, max_queued: int | None) -> Iterator[tuple[Server, Path]]:
    """mosquitto and the paho/SQLite writer, accounted together as one server."""
    db = Path(tempfile.mkdtemp(dir=bench.work)) / "pipeline.sqlite"
    writer = bench.pki.devices[0]
    with bench.server("mosquitto", max_queued=max_queued) as broker:
        log = bench.work / f"pipeline-{broker.port}.log"
        cmd = [sys.executable, str(servers.BENCH_DIR / "pipeline_subscriber.py"), "127.0.0.1",
               str(broker.port), str(bench.pki.root), str(writer.cert), str(writer.key),
               str(db)]
        sub = servers._spawn(cmd, log, bench.server_cpus)
        server = Server("pipeline", broker.port, broker.procs + [sub], log)
        try:
            deadline = time.monotonic() + 20
            while "ready" not in log.read_text(errors="replace"):
                if sub.poll() is not None or time.monotonic() > deadline:
                    raise Unavailable("the pipeline's subscriber did not subscribe: "
                                      + log.read_text(errors="replace")[-200:])
                time.sleep(0.05)
            yield server, db
        finally:
            sub.terminate()
            try:
                sub.wait(20)
            except subprocess.TimeoutExpired:
                sub.kill()
                sub.wait(5)


def _rows(db: Path) -> int:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
            return c.execute("SELECT count(*) FROM reports").fetchone()[0]
    except sqlite3.Error:
        return 0


def _pipeline_run(bench: Bench, seconds: float, max_queued: int | None,
                  settle: float) -> dict[str, Any]:
    """Publish QoS 1 from 10 clients for ``seconds``; wait until the store stops growing."""
    with pipeline(bench, max_queued=max_queued) as (server, db):
        spec = bench.spec(server, "publish", qos=1, clients=10, duration=seconds,
                          topic="bench/report")
        with LoadRun(spec) as run:
            run.wait_ready()
            cpu0 = server.cpu_seconds()
            t0 = time.monotonic()
            run.go()
            result = run.wait_results(seconds + 300)
        stored, last_change = _rows(db), time.monotonic()
        while stored < result.ok and time.monotonic() - last_change < settle:
            time.sleep(0.1)
            now = _rows(db)
            if now != stored:
                stored, last_change = now, time.monotonic()
        cpu = server.cpu_seconds() - cpu0
        elapsed = max(last_change, t0 + result.seconds) - t0
    return {
        "acked": result.ok, "sent": result.sent, "stored": stored,
        "lost": max(0, result.ok - stored),
        "lost_pct": round(100.0 * max(0, result.ok - stored) / result.ok, 3) if result.ok else 0,
        "acked_per_s": round(result.rate, 1), "stored_per_s": round(stored / elapsed, 1),
        "seconds_to_store": round(elapsed, 3), "server_cpu_s": round(cpu, 2),
        "per_cpu_s": round(stored / cpu, 1) if cpu > 0 else None,
        "failed": result.failed, "errors": result.errors,
    }


def figure_stored(bench: Bench) -> list[Row]:
    case = "QoS 1, 10 clients, acknowledged then stored"
    pipe = Row("3", case, "pipeline (mosquitto + paho + SQLite)", "stored reports/s",
               key="stored_per_s",
               notes=["mosquitto with max_queued_messages 0 (unlimited) so that nothing is "
                      "dropped; the writer commits batches of up to 1000 (WAL, synchronous "
                      "FULL); the rate counts rows, from the first publish to the last commit"])
    fleet = Row("3", case, "fleetgate", "stored reports/s", key="stored_per_s",
                unavailable="not yet available (needs issue 6: durable ingest)")
    if bench.wanted("pipeline"):
        for _ in range(bench.runs):
            try:
                pipe.add(**_pipeline_run(bench, bench.sizes.stored_seconds, 0, settle=10))
            except (LoadError, Unavailable) as exc:
                pipe.notes.append(f"stopped: {exc}")
                break
            bench.log(f"  pipeline: {pipe.runs[-1]['stored_per_s']} stored/s")
        _note_saturation(pipe)
    else:
        return [fleet]
    return [fleet, pipe]


def figure_overload(bench: Bench) -> list[Row]:
    s = bench.sizes.overload_seconds
    case = f"QoS 1 flood for {s:g} s, 10 clients"
    pipe = Row("4", case, "pipeline (mosquitto + paho + SQLite)", "% of acknowledged lost",
               key="lost_pct", cpu_key=None, lower_is_better=True,
               notes=["mosquitto at its defaults (max_queued_messages 1000, "
                      "max_inflight_messages 20); lost = acknowledged to the publisher minus "
                      "rows in SQLite once the store stops growing (every message sent was "
                      "acknowledged before counting)"])
    fleet = Row("4", case, "fleetgate", "% of acknowledged lost", key="lost_pct",
                cpu_key=None, lower_is_better=True,
                unavailable="not yet available (needs issue 6: durable ingest)")
    if not bench.wanted("pipeline"):
        return [fleet]
    for _ in range(bench.runs):
        try:
            pipe.add(**_pipeline_run(bench, s, None, settle=5))
        except (LoadError, Unavailable) as exc:
            pipe.notes.append(f"stopped: {exc}")
            break
        r = pipe.runs[-1]
        bench.log(f"  pipeline: acked {r['acked']}, stored {r['stored']}, lost {r['lost_pct']}%")
    return [fleet, pipe]


# ---------------------------------------------------------------------------------------------
# figure 5: memory per idle mTLS connection


def figure_memory(bench: Bench) -> list[Row]:
    cases = [f"{n} idle connections" for n in bench.sizes.idle_connections]
    rows = {(c, s): Row("5", c, s, "KiB per connection", key="kib_per_connection",
                        cpu_key=None, lower_is_better=True)
            for c in cases for s in BROKERS}

    for system in BROKERS:
        if not bench.wanted(system):
            for case in cases:
                rows.pop((case, system))
            continue
        for case, n in zip(cases, bench.sizes.idle_connections, strict=True):
            row = rows[(case, system)]
            bench.log(f"  {system}: {case}")
            for _ in range(bench.runs):
                try:
                    # A fresh server per run: memory a previous run freed may not go back.
                    with bench.server(system) as server:
                        _server_notes(row, server)
                        row.add(**_idle_run(bench, server, n))
                except Unavailable as exc:
                    row.unavailable = str(exc)
                    break
                except LoadError as exc:
                    row.notes.append(f"stopped: {exc}")
                    break
            _note_saturation(row)
    return list(rows.values())


def _idle_run(bench: Bench, server: Server, n: int) -> dict[str, Any]:
    before = server.rss_kib()
    spec = bench.spec(server, "idle", clients=n, concurrency=32)
    with LoadRun(spec) as run:
        ready = run.wait_ready(timeout=900)
        connected = sum(r.ok for r in ready.values())
        failed = sum(r.failed for r in ready.values())
        time.sleep(1.0)  # let the server finish what the last CONNACKs started
        after = server.rss_kib()
    per = (after - before) / connected if connected else None
    return {"connections": connected, "failed": failed, "rss_before_kib": before,
            "rss_after_kib": after, "kib_per_connection": round(per, 2) if per else None}


# ---------------------------------------------------------------------------------------------
# figure 7: revocation of a live session


def figure_revocation(bench: Bench) -> list[Row]:
    case = "revoke a connected device"
    systems = ("fleetgate", "mosquitto")
    rows = {s: Row("7", case, s, "seconds to close", key="seconds", cpu_key=None,
                   lower_is_better=True) for s in systems}
    try:
        crl = crl_path(bench.pki)
    except PkiError as exc:
        for row in rows.values():
            row.unavailable = f"no CRL: {exc}"
        return list(rows.values())
    for system in systems:
        row = rows[system]
        if not bench.wanted(system):
            rows.pop(system)
            continue
        kw = {"crl": crl} if system == "mosquitto" else {}
        candidates = [d for d in bench.pki.devices[1:] if d.uuid not in bench.revoked]
        for run in range(min(bench.runs, len(candidates))):
            device = candidates[-1 - run]
            try:
                with bench.server(system, **kw) as server:
                    _server_notes(row, server)
                    row.add(**_revoke_run(bench, server, device, system))
            except Unavailable as exc:
                row.unavailable = str(exc)
                break
            r = row.runs[-1]
            bench.log(f"  {system}: closed after {r['seconds']} s" if r["closed"]
                      else f"  {system}: still open {bench.sizes.revoke_wait:g} s after revoke")
        if row.runs and not any(r["closed"] for r in row.runs):
            extra = ("; new handshakes with the revoked certificate were still accepted"
                     if any(r.get("new_handshake_accepted") for r in row.runs) else "")
            row.verdict = "never without restart"
            row.notes.append(f"never without restart: the session was still open "
                             f"{bench.sizes.revoke_wait:g} s after the revocation in every run"
                             + extra)
    return list(rows.values())


def _revoke_run(bench: Bench, server: Server, device: Any, system: str) -> dict[str, Any]:
    spec = replace(bench.spec(server, "idle"), devices=((str(device.cert), str(device.key)),))
    sock = _mqtt_session(spec)
    try:
        t0 = time.monotonic()
        revoke(bench.pki, device)
        bench.revoked.add(device.uuid)
        t_cmd = time.monotonic() - t0
        closed_at = _wait_closed(sock, bench.sizes.revoke_wait)
    finally:
        sock.close()
    out: dict[str, Any] = {"device": device.uuid, "revoke_command_s": round(t_cmd, 3),
                           "closed": closed_at is not None,
                           "seconds": round(closed_at - t0, 3) if closed_at else None}
    if closed_at is None:
        try:
            _mqtt_session(spec).close()
            out["new_handshake_accepted"] = True
        except (OSError, ssl.SSLError, ConnectionError):
            out["new_handshake_accepted"] = False
    return out


def _mqtt_session(spec: LoadSpec) -> ssl.SSLSocket:
    ctx = client_context(spec, spec.devices[0])
    raw = socket.create_connection((spec.host, spec.port), timeout=10)
    sock = ctx.wrap_socket(raw, server_hostname="localhost")
    sock.sendall(mqttwire.connect(f"revoke-{time.monotonic_ns()}", keepalive=60))
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            raise ConnectionError("closed before CONNACK")
        head += chunk
    if head[0] >> 4 != mqttwire.PacketType.CONNACK or head[3] != 0:
        sock.close()
        raise ConnectionError(f"CONNACK {head.hex()}")
    return sock


def _wait_closed(sock: ssl.SSLSocket, wait: float) -> float | None:
    """When the server closed the session (EOF or reset), or None if open after ``wait``."""
    deadline = time.monotonic() + wait
    next_ping = 0.0
    sock.setblocking(False)
    while (now := time.monotonic()) < deadline:
        if now >= next_ping:  # a ping makes a half-dead connection show itself
            try:
                sock.send(mqttwire.PINGREQ)
            except ssl.SSLWantWriteError:
                pass
            except (OSError, ssl.SSLError):
                return time.monotonic()
            next_ping = now + 0.5
        readable, _, _ = select.select([sock], [], [], min(0.1, max(0.0, deadline - now)))
        if readable:
            try:
                while sock.recv(4096):
                    pass
                return time.monotonic()  # EOF
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            except (OSError, ssl.SSLError):
                return time.monotonic()
    return None


FIGURES: dict[str, Callable[[Bench], list[Row]]] = {
    "6": figure_ca,
    "1": figure_connects,
    "2": figure_publish,
    "3": figure_stored,
    "4": figure_overload,
    "5": figure_memory,
    "7": figure_revocation,
}

TITLES = {
    "1": "Full mTLS connects (handshake, CONNECT/CONNACK, DISCONNECT)",
    "2": "Publishes per second, 100-byte payloads",
    "3": "Durably stored reports per second",
    "4": "Loss under overload",
    "5": "Memory per idle mTLS connection (server RSS)",
    "6": "CA: device bundles per second",
    "7": "Revocation: `revoke` to the live session closed",
}

__all__ = ["FIGURES", "TITLES", "Bench", "Sizes"]
