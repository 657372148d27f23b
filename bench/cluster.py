"""Figure 8: the cluster. Stored reports per server CPU-second on SQLite, on PostgreSQL, and
on two nodes sharing PostgreSQL; relay and takeover across nodes (`bench.cluster_relay`);
failover when one of two nodes is killed.

- Stored: QoS 1 from 10 clients (figure 3's load), rows counted in the store once it stops
  growing. The server's CPU counts every gateway process (the supervisor and its workers
  for `--workers 2`) and every PostgreSQL process (live backends from /proc, plus what
  exited backends used: the postmaster's cutime/cstime). PostgreSQL runs on the server
  cores too, so "per CPU-second" compares whole servers.
- Failover: a firmware-sim fleet on `serve --workers 2` (one port, SO_REUSEPORT); once every
  device has a stored reading, one worker is killed with SIGKILL; measured: seconds until
  every device has a reading stored after the kill (the killed worker's devices reconnect to
  the survivor), and acknowledged readings missing from the store at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import mqttwire, servers
from bench.context import Bench, note_saturation, stopped
from bench.loadgen import LoadError
from bench.pki import fleet_ca_command, fleet_ca_env
from bench.results import Row
from bench.servers import CLK_TCK, Server, Unavailable, proc_cpu_seconds, spawn
from bench.stored import FLEETGATE_MODEL, _stored_run

FAILOVER_BUDGET = 10.0
LISTENING = re.compile(r'"event": "listening", "mqtt": "127\.0\.0\.1:(\d+)"')
METRICS_LISTENING = re.compile(r'"event": "listening", "metrics": "127\.0\.0\.1:(\d+)"')
HTTP_LISTENING = re.compile(r'"event": "listening", "http": "127\.0\.0\.1:(\d+)"')


@dataclass
class Postgres:
    """A throwaway PostgreSQL pinned to the server cores; `cpu_seconds()` of all of it."""

    server: Any
    url: str
    postmaster: int

    def cpu_seconds(self) -> float:
        pids = servers._descendants(self.postmaster)
        try:
            with open(f"/proc/{self.postmaster}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            exited = (int(fields[13]) + int(fields[14])) / CLK_TCK  # cutime + cstime
        except OSError:
            exited = 0.0
        return sum(proc_cpu_seconds(p) for p in pids) + exited

    def count(self, sql: str, *params: Any) -> Any:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()


@contextlib.contextmanager
def postgres(bench: Bench) -> Iterator[Postgres]:
    from gateway.storage.postgres.local_server import (
        LocalPostgres,
        LocalPostgresError,
        find_bin_dir,
    )

    if find_bin_dir() is None:
        raise Unavailable("PostgreSQL is not installed (Debian package postgresql)")
    # Outside the bench's private folder: the unprivileged server user must reach it.
    server = LocalPostgres(Path(tempfile.mkdtemp(prefix="fleetgate-bench-pg-")))
    try:
        server.start()
    except LocalPostgresError as exc:
        server.remove()
        raise Unavailable(f"PostgreSQL would not start: {exc}") from None
    try:
        postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
        for pid in servers._descendants(postmaster):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, bench.server_cpus)
        url = server.create_database("bench")
        yield Postgres(server, url, postmaster)
    finally:
        server.remove()


@dataclass
class ClusterServer(Server):
    """Gateway processes plus the PostgreSQL they share, accounted as one server."""

    pg: Postgres | None = None
    worker_pids: dict[str, int] = field(default_factory=dict)
    pg_readings: list[float] = field(default_factory=list)  # PostgreSQL's part of each read
    metrics_port: int = 0  # its plain /metrics listener (one worker only)
    http_port: int = 0  # its HTTPS API (`gateway_on(..., http=True)`, one worker only)

    def metric(self, name: str) -> float | None:
        """One unlabelled sample of the node's /metrics, or None."""
        import urllib.request

        if not self.metrics_port:
            return None
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=10) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(f"fleetgate_{name} "):
                    return float(line.split()[-1])
        return None

    def cpu_seconds(self) -> float:
        pg = self.pg.cpu_seconds() if self.pg else 0.0
        self.pg_readings.append(pg)
        return super().cpu_seconds() + pg

    def rss_kib(self) -> int:
        return super().rss_kib()


@contextlib.contextmanager
def gateway_on(bench: Bench, pg: Postgres, workers: int, node: str = "bench", *,
               limits: str = "", http: bool = False) -> Iterator[ClusterServer]:
    """`fleet-gateway serve --store <pg> --workers N`, waiting for every worker's
    `listening` line. `limits`: TOML lines added to the bench config's [limits]; `http`:
    the HTTPS API on a free port too (one worker)."""
    exe = Path(sys.executable).parent / "fleet-gateway"
    if not exe.exists():
        raise Unavailable("fleet-gateway is not installed")
    log = bench.work / f"cluster-{time.monotonic_ns()}.log"
    config = bench.work / f"fleetgate-bench-{node}.toml"
    config.write_text(servers.FLEETGATE_BENCH_CONFIG + limits)
    cmd = [str(exe), "serve", "--config", str(config), "--ca-home", str(bench.pki.home),
           "--store", pg.url, "--node", node, "--workers", str(workers),
           "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0" if http else "off"]
    if workers == 1:
        cmd += ["--metrics", "127.0.0.1:0"]
    proc = spawn(cmd, log, bench.server_cpus)
    server = ClusterServer(f"{workers} node(s)", 0, [proc], log, pg=pg)
    try:
        deadline = time.monotonic() + 60
        while True:
            text = log.read_text(errors="replace")
            ports = LISTENING.findall(text)
            for line in text.splitlines():
                if '"worker_started"' in line:
                    record = json.loads(line)
                    server.worker_pids[record["node"]] = record["pid"]
            metrics = METRICS_LISTENING.search(text)
            api = HTTP_LISTENING.search(text)
            if len(ports) >= workers and (workers > 1 or metrics) and (api or not http):
                server.port = int(ports[0])
                server.metrics_port = int(metrics[1]) if metrics else 0
                server.http_port = int(api[1]) if api else 0
                break
            if proc.poll() is not None:
                tail = text.strip().splitlines()[-1:] or ["(no output)"]
                raise Unavailable(f"fleet-gateway serve --store exited {proc.returncode}: "
                                  f"{tail[0][:200]}")
            if time.monotonic() > deadline:
                raise Unavailable("fleet-gateway serve --store: no listening line in 60 s")
            time.sleep(0.05)
        yield server
    finally:
        server.stop()


ROWS_SQL = "SELECT count(*) FROM state_log"


@contextlib.contextmanager
def _pg_system(bench: Bench, workers: int,
               pg_cpu: list[float]) -> Iterator[tuple[Server, Any, dict]]:
    """`_stored_run`'s system on PostgreSQL; appends PostgreSQL's CPU seconds over the
    measured window (the first to the last CPU reading) to `pg_cpu`."""
    with postgres(bench) as pg, gateway_on(bench, pg, workers) as server:
        prelude = mqttwire.publish("model", FLEETGATE_MODEL, qos=1, packet_id=0xFFFF)
        try:
            yield (server, lambda: pg.count(ROWS_SQL)[0][0],
                   {"topic": "report/bench/v", "prelude": prelude})
        finally:
            if len(server.pg_readings) >= 2:
                pg_cpu.append(server.pg_readings[-1] - server.pg_readings[0])


SYSTEMS = {
    "fleetgate, 1 node, SQLite": None,
    "fleetgate, 1 node, PostgreSQL": 1,
    "fleetgate, 2 nodes (--workers 2), PostgreSQL": 2,
}


def _stored_rows(bench: Bench) -> list[Row]:
    case = "QoS 1, 10 clients, acknowledged then stored"
    cores = len(bench.server_cpus)
    rows = {}
    for system, workers in SYSTEMS.items():
        row = Row("8", case, system, "stored reports/s", key="stored_per_s", notes=[
            "per CPU-second counts every gateway process and every PostgreSQL process "
            "(live backends, and exited ones through the postmaster's cutime/cstime)",
            f"the servers (gateways and PostgreSQL) share {cores} pinned core(s): two nodes "
            "can add throughput only with a core each, so on this machine the per "
            "CPU-second figure is the comparable one"])
        rows[system] = row
        for _ in range(bench.runs):
            pg_cpu: list[float] = []
            try:
                if workers is None:
                    run = _stored_run(bench, "fleetgate", bench.sizes.stored_seconds, None,
                                      settle=10)
                else:
                    run = _stored_run(bench, "fleetgate", bench.sizes.stored_seconds, None,
                                      settle=10, store=lambda w=workers, c=pg_cpu:
                                      _pg_system(bench, w, c))
                    if pg_cpu:
                        run["postgres_cpu_s"] = round(pg_cpu[-1], 2)
                        run["stored_per_postgres_cpu_s"] = (
                            round(run["stored"] / pg_cpu[-1], 1) if pg_cpu[-1] > 0 else None)
            except Unavailable as exc:
                row.unavailable = str(exc)
                break
            except LoadError as exc:
                stopped(row, exc)
                break
            row.add(**run)
            bench.log(f"  {system}: stored {run['stored']} ({run['stored_per_s']}/s, "
                      f"{run['per_cpu_s']} per CPU-s, of which PostgreSQL "
                      f"{run.get('postgres_cpu_s', 0)} s), lost {run['lost']}")
        note_saturation(row)
    return list(rows.values())


# ---------------------------------------------------------------------------------------------
# failover

FIRST_AFTER_SQL = """
SELECT n.uuid::text, min(l.received_us) FROM state_log l JOIN states s ON s.id = l.state_id
JOIN networks n ON n.id = s.network_id WHERE l.received_us >= %s GROUP BY n.uuid
"""
STORED_SQL = """
SELECT n.uuid::text, count(*) FROM state_log l JOIN states s ON s.id = l.state_id
JOIN networks n ON n.id = s.network_id GROUP BY n.uuid
"""


def _bundles(bench: Bench, count: int) -> Path:
    out = bench.work / f"failover-devices-{count}"
    if not out.exists():
        exe = fleet_ca_command()
        if exe is None or bench.pki.tool != "fleet-ca":
            raise Unavailable("needs fleet-ca for the fleet's bundles")
        done = subprocess.run([exe, "issue", "device", "--count", str(count), "--out",
                               str(out)], env=fleet_ca_env(bench.pki.home),
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise Unavailable(f"fleet-ca issue device failed: {done.stderr.strip()[-200:]}")
    return out


def _wait(what: str, predicate, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LoadError(f"{what}: not within {seconds:g} s")
        time.sleep(0.05)


def _failover_run(bench: Bench, devices: int, seconds: float) -> dict[str, Any]:
    bundles = _bundles(bench, devices)
    sim = Path(sys.executable).parent / "firmware-sim"
    with postgres(bench) as pg, gateway_on(bench, pg, 2) as server:
        events = bench.work / f"failover-events-{time.monotonic_ns()}.jsonl"
        out = bench.work / f"failover-fleet-{time.monotonic_ns()}.json"
        with open(out, "w") as sink:
            fleet = subprocess.Popen(
                [str(sim), "fleet", "--bundles", str(bundles), "--count", str(devices),
                 "--rate", "1", "--duration", str(seconds), "--gateway",
                 f"127.0.0.1:{server.port}", "--json", "--events", str(events),
                 "--backoff-base", "0.2", "--backoff-max", "1"],
                stdout=sink, stderr=subprocess.STDOUT, preexec_fn=_pin(bench.loadgen_cpus))
        try:
            _wait("every device reporting", lambda: len(pg.count(STORED_SQL)) >= devices, 120)
            victim = sorted(server.worker_pids)[0]
            killed_at = time.time()
            os.kill(server.worker_pids[victim], signal.SIGKILL)
            firsts = _wait("every device reporting again after the kill", lambda: (
                rows if len(rows := pg.count(FIRST_AFTER_SQL, int(killed_at * 1e6)))
                >= devices else None), 120)
            back = max(first for _, first in firsts) / 1e6 - killed_at
            fleet.wait(seconds + 120)
        finally:
            if fleet.poll() is None:
                fleet.kill()
                fleet.wait()
        hit = sum(1 for line in events.read_text().splitlines()
                  if '"disconnected"' in line and json.loads(line)["time"] >= killed_at)
        result = json.loads(out.read_text().strip().splitlines()[-1])
        stored = dict(pg.count(STORED_SQL))
    lost = sum(max(0, d["acked"] - stored.get(d["device"], 0)) for d in result["devices"])
    return {"value": round(back, 3), "devices": devices, "disconnects": hit,
            "acked": result["totals"]["acked"], "stored": sum(stored.values()), "lost": lost,
            "killed": victim}


def _pin(cpus: tuple[int, ...]):
    def pre() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
    return pre


def _failover_rows(bench: Bench) -> list[Row]:
    devices = bench.sizes.failover_devices
    row = Row("8", f"failover: 1 of 2 workers killed (SIGKILL), {devices} devices",
              "fleetgate, 2 nodes (--workers 2), PostgreSQL",
              "seconds until every device reports again", lower_is_better=True, cpu_key=None,
              notes=["firmware-sim fleet, 1 reading per second per device, reconnect backoff "
                     "0.2 s doubling to 1 s; measured from the kill to the last device's first "
                     "reading stored after it; 'lost' = acknowledged readings not in the store "
                     f"at the end (target: every device back within {FAILOVER_BUDGET:g} s, "
                     "0 lost)"])
    for _ in range(bench.runs):
        try:
            run = _failover_run(bench, devices, bench.sizes.failover_seconds)
        except Unavailable as exc:
            row.unavailable = str(exc)
            break
        except LoadError as exc:
            stopped(row, exc)
            break
        row.add(**run)
        bench.log(f"  failover: every device back in {run['value']} s "
                  f"({run['disconnects']} disconnects), lost {run['lost']}")
    return [row]


def figure_cluster(bench: Bench) -> list[Row]:
    from bench.cluster_relay import relay_rows

    return _stored_rows(bench) + relay_rows(bench) + _failover_rows(bench)
