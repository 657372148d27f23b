"""What `secure_delete` (always on for the store's writer) costs: CPU seconds and WAL bytes
of the ingest insert path and of a delete path, on and off, same schema, interleaved runs.
Not a test.

    .venv/bin/python bench/secure_delete_bench.py            # ~30 s
    .venv/bin/python bench/secure_delete_bench.py --rows 50000 --runs 3

Commits run with synchronous=OFF so fsync time (identical either way) does not hide the
difference; each figure is the median of --runs process-CPU measurements.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.storage.sqlite.schema import configure_writer, migrate  # noqa: E402

BATCH, STATES, PAYLOAD = 500, 1000, "x" * 90


def run(folder: str, secure: int, rows: int) -> tuple[float, float, int, int]:
    """Insert `rows` reports then delete them all, in batches; return (insert CPU s, delete
    CPU s, WAL bytes after the inserts, WAL bytes after the deletes)."""
    path = os.path.join(folder, f"s{secure}.sqlite3")
    conn = sqlite3.connect(path, isolation_level=None)
    configure_writer(conn, synchronous="OFF")
    migrate(conn)
    conn.execute(f"PRAGMA secure_delete={secure}")
    conn.execute("PRAGMA foreign_keys=OFF")  # no parent rows: the insert path alone
    conn.execute("PRAGMA wal_autocheckpoint=0")
    sql = "INSERT INTO state_log (state_id, ts_us, received_us, data) VALUES (?, ?, ?, ?)"
    t0 = time.process_time()
    for start in range(0, rows, BATCH):
        conn.execute("BEGIN")
        conn.executemany(sql, [((i * 7919) % STATES + 1, i, i, PAYLOAD)
                               for i in range(start, start + BATCH)])
        conn.execute("COMMIT")
    inserted = time.process_time() - t0
    wal_insert = os.path.getsize(path + "-wal")
    t0 = time.process_time()
    for state in range(1, STATES + 1):
        conn.execute("DELETE FROM state_log WHERE state_id = ?", (state,))
    deleted = time.process_time() - t0
    wal_delete = os.path.getsize(path + "-wal") - wal_insert
    conn.close()
    return inserted, deleted, wal_insert, wal_delete


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.rows <= 0 or args.runs <= 0:
        parser.error("--rows and --runs must be positive")
    results: dict[int, list[tuple[float, float, int, int]]] = {0: [], 1: []}
    for _ in range(args.runs):
        for secure in (0, 1):
            with tempfile.TemporaryDirectory() as folder:
                results[secure].append(run(folder, secure, args.rows))
    print(f"{'secure_delete':<14}{'insert CPU s':>13}{'rows/CPU-s':>12}{'WAL MB':>8}"
          f"{'delete CPU s':>14}{'delete WAL MB':>15}")
    med = {}
    for secure in (0, 1):
        ins, dele, wal_i, wal_d = (statistics.median(x) for x in zip(*results[secure],
                                                                      strict=True))
        med[secure] = (ins, dele)
        print(f"{'on' if secure else 'off':<14}{ins:>13.3f}{args.rows / ins:>12,.0f}"
              f"{wal_i / 1e6:>8.1f}{dele:>14.3f}{wal_d / 1e6:>15.1f}")
    print(f"on/off: insert CPU {med[1][0] / med[0][0]:.3f}x, delete CPU "
          f"{med[1][1] / med[0][1]:.3f}x ({args.rows:,} rows, {args.runs} runs each, "
          f"SQLite {sqlite3.sqlite_version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
