"""Figures 3 and 4: durably stored reports, and loss under overload.

Both publish QoS 1 from 10 clients and then count rows in the system's own store once it stops
growing: the do-it-yourself pipeline (mosquitto, a paho subscriber writing SQLite in batches,
`bench/pipeline_subscriber.py`) and fleetgate (its `--data` SQLite store, each client a device
that first declares one string value). Acknowledged minus stored is what was lost.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench import mqttwire, servers
from bench.context import Bench, note_saturation, stopped
from bench.loadgen import LoadError, LoadRun
from bench.results import Row
from bench.servers import Server, Unavailable


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
        sub = servers.spawn(cmd, log, bench.server_cpus)
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


def _count(db: Path, table: str) -> int:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
            return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    except sqlite3.Error:
        return 0


# What a fleetgate device declares before reporting (docs/protocol.md): one string value that
# takes the same 100-byte payloads the pipeline stores.
FLEETGATE_MODEL = (b'{"devices": [{"name": "bench", "values": [{"name": "v", "permission": "r", '
                   b'"string": {"max": 200}}]}]}')
FLEETGATE_DB, FLEETGATE_ROWS = "fleetgate.sqlite3", "state_log"


@contextlib.contextmanager
def _store_system(bench: Bench, system: str,
                  max_queued: int | None) -> Iterator[tuple[Server, Callable[[], int], dict]]:
    """A system that stores reports: the server, a row counter, and the load spec's extras."""
    if system == "pipeline":
        with pipeline(bench, max_queued=max_queued) as (server, db):
            yield server, lambda: _count(db, "reports"), {"topic": "bench/report"}
        return
    data = Path(tempfile.mkdtemp(dir=bench.work)) / "data"
    with bench.server("fleetgate", data=data) as server:
        prelude = mqttwire.publish("model", FLEETGATE_MODEL, qos=1, packet_id=0xFFFF)
        yield (server, lambda: _count(data / FLEETGATE_DB, FLEETGATE_ROWS),
               {"topic": "report/bench/v", "prelude": prelude})


def _stored_run(bench: Bench, system: str, seconds: float, max_queued: int | None,
                settle: float, store: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Publish QoS 1 from 10 clients for ``seconds``; wait until the store stops growing.
    ``store()``: another system's context (server, row counter, spec extras) (figure 8)."""
    system_cm = store() if store is not None else _store_system(bench, system, max_queued)
    with system_cm as (server, rows, extra):
        spec = bench.spec(server, "publish", qos=1, clients=10, duration=seconds, **extra)
        with LoadRun(spec) as run:
            run.wait_ready()
            cpu0 = server.cpu_seconds()
            t0 = time.monotonic()
            run.go()
            result = run.wait_results(seconds + 300)
        stored, last_change = rows(), time.monotonic()
        # Nothing stored at all after a few seconds: the system does not store (yet).
        while stored < result.ok and time.monotonic() - last_change < (settle if stored else 3):
            time.sleep(0.1)
            now = rows()
            if now != stored:
                stored, last_change = now, time.monotonic()
        cpu = server.cpu_seconds() - cpu0
        elapsed = max(last_change, t0 + result.seconds) - t0
    if system == "fleetgate" and not stored:
        why = f"; errors: {result.errors}" if result.errors else ""
        raise Unavailable(f"not yet available: fleet-gateway acknowledged "
                          f"{result.ok} reports and stored none{why}"[:300])
    lost = max(0, result.ok - stored)
    return {
        "acked": result.ok, "sent": result.sent, "stored": stored, "lost": lost,
        "lost_pct": round(100.0 * lost / result.ok, 3) if result.ok else 0.0,
        "acked_per_s": round(result.rate, 1), "stored_per_s": round(stored / elapsed, 1),
        "seconds_to_store": round(elapsed, 3), "server_cpu_s": round(cpu, 2),
        "per_cpu_s": round(stored / cpu, 1) if cpu > 0 else None,
        "failed": result.failed, "errors": result.errors,
    }


PIPELINE = "pipeline (mosquitto + paho + SQLite)"


def _store_figure(bench: Bench, rows: dict[str, Row], seconds: float, settle: float,
                  max_queued: int | None) -> list[Row]:
    for system, row in rows.items():
        if not bench.wanted(system):
            continue
        for _ in range(bench.runs):
            try:
                row.add(**_stored_run(bench, system, seconds, max_queued if system == "pipeline"
                                      else None, settle))
            except Unavailable as exc:
                row.unavailable = str(exc)
                break
            except LoadError as exc:
                stopped(row, exc)
                break
            r = row.runs[-1]
            bench.log(f"  {system}: acked {r['acked']}, stored {r['stored']} "
                      f"({r['stored_per_s']}/s), lost {r['lost_pct']} %")
        note_saturation(row)
    return [row for system, row in rows.items() if bench.wanted(system)]


def figure_stored(bench: Bench) -> list[Row]:
    case = "QoS 1, 10 clients, acknowledged then stored"
    unit = "stored reports/s"
    rows = {
        "fleetgate": Row("3", case, "fleetgate", unit, key="stored_per_s",
                         notes=["fleetgate acknowledges after commit; each client is one "
                                "device (network) reporting a declared string value"]),
        "pipeline": Row("3", case, PIPELINE, unit, key="stored_per_s",
                        notes=["mosquitto with max_queued_messages 0 (unlimited) so that "
                               "nothing is dropped; the writer commits batches of up to 1000 "
                               "(WAL, synchronous FULL)"]),
    }
    for row in rows.values():
        row.notes.append("rate = rows in the store / time from the first publish to the "
                         "last new row")
    return _store_figure(bench, rows, bench.sizes.stored_seconds, settle=10, max_queued=0)


def figure_overload(bench: Bench) -> list[Row]:
    s = bench.sizes.overload_seconds
    case = f"QoS 1 flood for {s:g} s, 10 clients"
    unit = "% of acknowledged lost"
    rows = {
        "fleetgate": Row("4", case, "fleetgate", unit, key="lost_pct", cpu_key=None,
                         lower_is_better=True),
        "pipeline": Row("4", case, PIPELINE, unit, key="lost_pct", cpu_key=None,
                        lower_is_better=True,
                        notes=["mosquitto at its defaults (max_queued_messages 1000, "
                               "max_inflight_messages 20)"]),
    }
    for row in rows.values():
        row.notes.append("lost = acknowledged to the publisher minus rows in the store once "
                         "it stops growing (every message sent was acknowledged before "
                         "counting)")
    return _store_figure(bench, rows, s, settle=5, max_queued=None)


