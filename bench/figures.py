"""The eight figures of `make bench`, each a function ``Bench -> list[Row]``.

Every figure measures each system in the same run, on the same machine, with the same load
generator. Figure numbers follow the issue; `FIGURES` lists them in the order they run
(cheapest and most wanted first). Figures 3 and 4 live in `bench.stored`, 7 in
`bench.revocation`, 8 in `bench.cluster`.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.cluster import figure_cluster
from bench.context import (
    BROKERS,
    CONNECTING,
    Bench,
    load_run,
    note_saturation,
    per_system,
    server_notes,
    stopped,
)
from bench.loadgen import STORM_ATTEMPT_TIMEOUT, STORM_BACKOFF, LoadError, LoadRun
from bench.pki import PkiError, fleet_ca_command, fleet_ca_env, openssl_device_loop
from bench.results import Row
from bench.revocation import figure_revocation
from bench.servers import Server, Unavailable
from bench.stored import figure_overload, figure_stored

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
                fleet.unavailable = ("not yet available: "
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
    storm = f"reconnect storm, {bench.sizes.storm} devices at once"
    rows = {(c, s): Row("1", c, s, "connects/s") for c in cases for s in CONNECTING}
    rows.update({(storm, s): Row(
        "1", storm, s, "seconds until all are back", key="storm_s", lower_is_better=True,
        notes=[f"storm: every device first connects once (as before an outage), then all "
               "reconnect at once over TLS 1.3 offering the session they got, as a device's TLS "
               "stack would; 'resumed' counts the connections the server resumed (a server "
               "without session tickets makes full handshakes); a refused or timed-out attempt "
               f"({STORM_ATTEMPT_TIMEOUT:g} s) is retried after {STORM_BACKOFF[0]:g} to "
               f"{STORM_BACKOFF[1]:g} s, like firmware; 'failed' counts those attempts; "
               "per CPU-second = devices back per server CPU-second"]) for s in CONNECTING})

    def body(server: Server, case: str, row: Row) -> None:
        if case == storm:
            spec = bench.spec(server, "storm", clients=bench.sizes.storm, duration=300,
                              resume=True)
        else:
            spec = bench.spec(server, "connect", tls=case.split()[1], count=bench.sizes.connects)
        for _ in range(bench.runs):
            run = load_run(bench, server, spec, timeout=900)
            if case == storm:
                back = run["ok"] == bench.sizes.storm
                run["storm_s"] = run["seconds"] if back else None
                if not back:
                    row.verdict = "not all back within 300 s"
                    run["not_back"] = bench.sizes.storm - run["ok"]
                row.notes.append(f"run {len(row.runs) + 1}: the server resumed "
                                 f"{run['resumed']:,} of {run['ok']:,} connections")
            row.add(**run)

    per_system(bench, rows, CONNECTING, [*cases, storm], body)
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
            row.add(**load_run(bench, server, spec, timeout=bench.sizes.publish_seconds + 120))

    per_system(bench, rows, BROKERS, cases, body)
    return list(rows.values())


# ---------------------------------------------------------------------------------------------
# figure 5: memory per idle mTLS connection


def figure_memory(bench: Bench) -> list[Row]:
    cases = [f"{n} idle connections" for n in bench.sizes.idle_connections]
    rows = {(c, s): Row("5", c, s, "KiB per connection", key="kib_per_connection",
                        cpu_key=None, lower_is_better=True)
            for c in cases for s in CONNECTING}

    for system in CONNECTING:
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
                        server_notes(row, server)
                        row.add(**_idle_run(bench, server, n))
                except Unavailable as exc:
                    row.unavailable = str(exc)
                    break
                except LoadError as exc:
                    stopped(row, exc)
                    break
            note_saturation(row)
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


FIGURES: dict[str, Callable[[Bench], list[Row]]] = {
    "6": figure_ca,
    "1": figure_connects,
    "2": figure_publish,
    "3": figure_stored,
    "4": figure_overload,
    "5": figure_memory,
    "7": figure_revocation,
    "8": figure_cluster,
}

TITLES = {
    "1": "Full mTLS connects (handshake, CONNECT/CONNACK, DISCONNECT)",
    "2": "Publishes per second, 100-byte payloads",
    "3": "Durably stored reports per second",
    "4": "Loss under overload",
    "5": "Memory per idle mTLS connection (server RSS)",
    "6": "CA: device bundles per second",
    "7": "Revocation: `revoke` to the live session closed",
    "8": "Cluster: stored reports on SQLite, PostgreSQL and two nodes; failover",
}
