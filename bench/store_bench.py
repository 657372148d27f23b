"""Store benchmark: reports stored per second through the group-commit writer, beside a naive
one-commit-per-insert loop on the same schema, measured in the same run. Not a test.

    .venv/bin/python bench/store_bench.py                 # defaults below, ~1 minute
    .venv/bin/python bench/store_bench.py --reports 20000 --naive 500   # quick look
    .venv/bin/python bench/store_bench.py --postgres      # and the same on PostgreSQL

Three figures, each on a fresh database with the real schema (indexes included), durable
commits (synchronous=FULL: one fsync per transaction), 100-byte string reports spread over
10 networks x 10 devices x 10 values:

- writer-N: `Store.submit_reports` with N reports per call from P producer tasks, each
  keeping a window of W unacknowledged reports (like a connection with W QoS 1 messages in
  flight) and awaiting their commits in order; time until the last commit;
- ingest-N: the same through `Ingest.submit_many` with N publishes per call (topic routing,
  plain-text payload validated against the declaration, then the writer): what the gateway
  calls; N=1 is one call per PUBLISH, N=10 one call per socket read of a pipelining client;
- naive: `INSERT` + `COMMIT` per report in a loop (the do-it-yourself subscriber's shape).

With --postgres, writer-N and ingest-N run again on the PostgreSQL store (a throwaway local
server: initdb in a temporary folder, unix socket, fsync on, synchronous_commit on, the
defaults otherwise). Every run also counts CPU seconds: this process's (the event loop and
the store's threads: all of SQLite's work, and psycopg's) plus, on PostgreSQL, the server's
(every postgres process of that server, read from /proc, exited ones through the
postmaster's reaped-children times), so "reports per CPU-second" compares what each store
costs the machine, not only how fast one client can push.

Prints a small table and, with --json, the figures as JSON. Exit codes: 0 done; 2 bad args.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio  # noqa: E402

from gateway.ingest import Ingest, ReportRow, parse_model  # noqa: E402
from gateway.storage import DB_NAME, open_sqlite_store  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")

NETWORKS, DEVICES, VALUES = 10, 10, 10
PAYLOAD = ("x" * 90 + "0123456789")[:100]  # 100 bytes


def model_payload() -> bytes:
    return json.dumps({"devices": [
        {"name": f"dev{d}", "values": [
            {"name": f"val{v}", "permission": "r", "string": {"max": 200}}
            for v in range(VALUES)]}
        for d in range(DEVICES)]}).encode()


async def _declare(store) -> list[tuple[uuid.UUID, uuid.UUID, str]]:
    """Declare the model in every network; return (network, value uuid, topic) triples."""
    model = parse_model(model_payload())
    out = []
    for _ in range(NETWORKS):
        network = uuid.uuid4()
        tree = await store.declare_model(network, model, datetime.now(UTC))
        for dev in tree.devices:
            for v in dev.values:
                out.append((network, v.uuid, f"report/{dev.name}/{v.name}"))
    return out


async def _drive(calls: int, producers: int, window: int, submit) -> float:
    """Run `producers` tasks making `calls` submits in total, each keeping `window` of them
    unacknowledged and awaiting acknowledgements in order; return seconds to the last commit.
    """
    per = calls // producers

    async def producer(p: int) -> None:
        inflight: deque = deque()
        for i in range(per):
            inflight.append(await submit(p, i))
            if len(inflight) >= window:
                await inflight.popleft()()
        while inflight:
            await inflight.popleft()()

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for p in range(producers):
            nursery.start_soon(producer, p)
    return time.perf_counter() - started


def _stat(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return []


def server_cpu_seconds(postmaster: int | None) -> float:
    """CPU seconds of a PostgreSQL server: every live process of it (utime + stime), plus
    the postmaster's reaped children (cutime + cstime: backends that exited)."""
    if postmaster is None:
        return 0.0
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))):
            children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, [postmaster]
    while todo:
        pid = todo.pop()
        fields = _stat(pid)
        if fields:
            total += int(fields[11]) + int(fields[12])
            if pid == postmaster:
                total += int(fields[13]) + int(fields[14])
        todo.extend(children.get(pid, []))
    return total / CLK_TCK


class Postgres:
    """A throwaway PostgreSQL server and a fresh database per run."""

    def __init__(self) -> None:
        from gateway.storage.postgres.local_server import LocalPostgres

        self.server = LocalPostgres(Path(tempfile.mkdtemp(prefix="fleetgate-bench-pg-")))
        self.server.start()
        self.runs = 0

    @property
    def postmaster(self) -> int:
        return int((self.server.data / "postmaster.pid").read_text().split()[0])

    def opener(self):
        from gateway.storage.postgres import open_postgres_store

        self.runs += 1
        url = self.server.create_database(f"bench{self.runs}")
        return lambda: open_postgres_store(url)

    def version(self) -> str:
        import psycopg

        with psycopg.connect(self.server.url()) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]

    def close(self) -> None:
        self.server.remove()


async def bench_writer(data_dir: Path, reports: int, producers: int, window: int,
                       chunk: int, via_ingest: bool, pg: Postgres | None = None) -> dict:
    """`chunk` reports per submit: 1 = one operation per message; 10 = what one socket
    read of a pipelining publisher typically decodes (the gateway's `submit_many`).
    With `pg`, on a fresh PostgreSQL database instead of SQLite in `data_dir`."""
    opener = pg.opener() if pg is not None else lambda: open_sqlite_store(data_dir)
    postmaster = pg.postmaster if pg is not None else None
    async with opener() as store:
        targets = await _declare(store)
        now = datetime.now(UTC)
        payload = PAYLOAD.encode()
        ingest = Ingest(store)
        before = store.statistics()

        def pick(p: int, i: int, k: int):
            return targets[(p * 7919 + i * chunk + k) % len(targets)]

        if via_ingest:
            async def submit(p: int, i: int):
                network = pick(p, i, 0)[0]
                msgs = [(pick(p, i, k)[2], payload, 1) for k in range(chunk)]
                pending = await ingest.submit_many(network, "bench", msgs, now)
                return pending.wait
        else:
            async def submit(p: int, i: int):
                rows = [ReportRow(pick(p, i, k)[1], PAYLOAD, now, now) for k in range(chunk)]
                ticket = await store.submit_reports(rows)
                return lambda: store.wait_committed(ticket)

        cpu0 = time.process_time() + server_cpu_seconds(postmaster)
        seconds = await _drive(reports // chunk, producers, max(1, window // chunk), submit)
        cpu = time.process_time() + server_cpu_seconds(postmaster) - cpu0
        after = store.statistics()
    commits = after.commits - before.commits
    stored = after.reports - before.reports
    return {"reports": stored, "seconds": round(seconds, 3), "per_second": round(stored / seconds),
            "transactions": commits, "mean_batch": round(stored / max(commits, 1), 1),
            "cpu_s": round(cpu, 2), "per_cpu_s": round(stored / cpu) if cpu > 0 else None}


def bench_naive(data_dir: Path, reports: int) -> dict:
    """One INSERT, one COMMIT per report, on the store's own schema and settings."""
    async def prepare() -> list[uuid.UUID]:
        async with open_sqlite_store(data_dir) as store:
            return [v for _, v, _ in await _declare(store)]
    values = trio.run(prepare)
    conn = sqlite3.connect(data_dir / DB_NAME, isolation_level=None)
    conn.execute("PRAGMA synchronous=FULL")
    state_ids = [conn.execute("SELECT s.id FROM states s JOIN value_nodes v ON v.id = s.value_id"
                              " WHERE v.uuid = ?", (str(v),)).fetchone()[0] for v in values]
    now_us = int(time.time() * 1e6)
    started = time.perf_counter()
    for i in range(reports):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO state_log (state_id, ts_us, received_us, data) "
                     "VALUES (?, ?, ?, ?)", (state_ids[i % len(state_ids)], now_us, now_us,
                                             PAYLOAD))
        conn.execute("COMMIT")
    seconds = time.perf_counter() - started
    conn.close()
    return {"reports": reports, "seconds": round(seconds, 3),
            "per_second": round(reports / seconds), "transactions": reports, "mean_batch": 1.0}


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "trio": trio.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=200_000)
    parser.add_argument("--producers", type=int, default=10)
    parser.add_argument("--window", type=int, default=100, help="unacknowledged per producer")
    parser.add_argument("--naive", type=int, default=3_000, help="reports in the naive loop")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the databases")
    parser.add_argument("--postgres", action="store_true",
                        help="also run writer-N and ingest-N on PostgreSQL (local server)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if min(args.reports, args.producers, args.window, args.naive) < 1:
        print("store_bench: sizes must be positive", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        results = {
            "writer-1": trio.run(bench_writer, root / "w1", args.reports, args.producers,
                                 args.window, 1, False),
            "writer-10": trio.run(bench_writer, root / "w10", args.reports, args.producers,
                                  args.window, 10, False),
            "ingest-1": trio.run(bench_writer, root / "i1", args.reports, args.producers,
                                 args.window, 1, True),
            "ingest-10": trio.run(bench_writer, root / "i10", args.reports, args.producers,
                                  args.window, 10, True),
            "naive": bench_naive(root / "naive", args.naive),
        }
        postgres_version = None
        if args.postgres:
            pg = Postgres()
            try:
                postgres_version = pg.version()
                for name, chunk, via in (("writer-1", 1, False), ("writer-10", 10, False),
                                         ("ingest-1", 1, True), ("ingest-10", 10, True)):
                    results[f"pg-{name}"] = trio.run(
                        bench_writer, root, args.reports, args.producers, args.window, chunk,
                        via, pg)
            finally:
                pg.close()
        results["naive"]["cpu_s"] = results["naive"]["per_cpu_s"] = None
    doc = {"machine": {**machine(), "postgresql": postgres_version},
           "args": {k: str(v) for k, v in vars(args).items()}, "results": results,
           "ratio_ingest10_vs_naive": round(results["ingest-10"]["per_second"]
                                            / results["naive"]["per_second"], 1)}
    if args.postgres:
        for name in ("writer-10", "ingest-10"):
            sqlite_, pg_ = results[name], results[f"pg-{name}"]
            doc[f"pg_vs_sqlite_{name}_per_cpu_s"] = round(
                pg_["per_cpu_s"] / sqlite_["per_cpu_s"], 2)
            doc[f"pg_vs_sqlite_{name}_per_s"] = round(pg_["per_second"] / sqlite_["per_second"],
                                                     2)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"{'path':<13} {'reports':>9} {'seconds':>8} {'reports/s':>10} {'txns':>8} "
              f"{'batch':>7} {'cpu s':>7} {'per cpu-s':>10}")
        for name, r in results.items():
            print(f"{name:<13} {r['reports']:>9} {r['seconds']:>8} {r['per_second']:>10} "
                  f"{r['transactions']:>8} {r['mean_batch']:>7} {r['cpu_s'] or '-':>7} "
                  f"{r['per_cpu_s'] or '-':>10}")
        print(f"ingest-10 / naive: {doc['ratio_ingest10_vs_naive']}x")
        for key, value in doc.items():
            if key.startswith("pg_vs_sqlite"):
                print(f"{key}: {value}x")
        print(f"machine: {doc['machine']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
