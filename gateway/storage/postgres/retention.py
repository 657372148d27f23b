"""Retention on PostgreSQL: readings older than a cutoff go by dropping week partitions.

A week's partition wholly before the cutoff is dropped (no row-by-row DELETE, no bloat, no
vacuum debt); the out-of-window partition `state_log_other` (readings stamped far from the
time they arrived) is small and loses its older rows by DELETE. Before a partition goes,
what it held is subtracted from each network's `network_usage` (one scan of the partition
being dropped, grouped by network), so the stored-bytes quota stays right.

It runs on a connection of its own, one transaction per week, not in the store's writer:
the scan of a large week would otherwise hold every device's reports back for as long.
Each transaction takes the partition lock (the one a writer takes to create a partition)
and checks the week is still there, so nodes running it at once drop each week once. A
reading that arrives for that old week while it is being scanned is dropped uncounted (the
quota then counts a few bytes too many); writers learn of the dropped partitions at their
next batch that needs one (one failed batch, retried at once).
"""

from __future__ import annotations

from datetime import datetime

import psycopg

from ..sql.convert import to_us
from ..sql.write_side import ROW_OVERHEAD
from .schema import PARTITION_LOCK, existing_weeks, partition_name, week_bounds


def _subtract(conn: psycopg.Connection, table: str, where: str = "TRUE",
              args: tuple = ()) -> int:
    rows = conn.execute(
        f"SELECT s.network_id, count(*), sum(octet_length(l.data) + {ROW_OVERHEAD}) "
        f"FROM {table} l JOIN states s ON s.id = l.state_id WHERE {where} "
        "GROUP BY s.network_id ORDER BY s.network_id", args).fetchall()
    for nid, _, size in rows:
        conn.execute("UPDATE network_usage SET stored_bytes = greatest(stored_bytes - %s, 0) "
                     "WHERE network_id = %s", (size, nid))
    return sum(count for _, count, _ in rows)


def drop_before(conn: psycopg.Connection, cutoff: datetime) -> int:
    """Drop readings with a timestamp before `cutoff` (whole weeks; the out-of-window
    partition row by row) through `conn` (autocommit: each week is its own transaction).
    Returns the readings removed."""
    limit = to_us(cutoff)
    removed = 0
    for week in sorted(existing_weeks(conn)):
        if week_bounds(week)[1] > limit:
            continue
        name = partition_name(week)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
            if conn.execute("SELECT 1 FROM pg_class WHERE relname = %s",
                            (name,)).fetchone() is None:
                continue  # another node dropped it meanwhile
            removed += _subtract(conn, name)
            conn.execute(f"DROP TABLE {name}")
    with conn.transaction():
        removed += _subtract(conn, "state_log_other", "l.ts_us < %s", (limit,))
        conn.execute("DELETE FROM state_log_other WHERE ts_us < %s", (limit,))
    return removed
