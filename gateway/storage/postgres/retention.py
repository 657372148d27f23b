"""Retention on PostgreSQL: readings older than a cutoff go by dropping week partitions.

A week's partition wholly before the cutoff is dropped (no row-by-row DELETE, no bloat, no
vacuum debt); the out-of-window partition `state_log_other` (readings stamped far from the
time they arrived) is small and loses its older rows by DELETE. Before a partition goes,
what it held is subtracted from each network's `network_usage` (one scan of the partition
being dropped, grouped by network), so the stored-bytes quota stays right.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..sql.convert import to_us
from ..sql.write_side import ROW_OVERHEAD
from .schema import PARTITION_LOCK, existing_weeks, partition_name, week_bounds


def _subtract(side: Any, table: str, where: str = "TRUE", args: tuple = ()) -> int:
    rows = side.conn.execute(
        f"SELECT s.network_id, count(*), sum(octet_length(l.data) + {ROW_OVERHEAD}) "
        f"FROM {table} l JOIN states s ON s.id = l.state_id WHERE {where} "
        "GROUP BY s.network_id ORDER BY s.network_id", args).fetchall()
    for nid, _, size in rows:
        (side.usage[nid],) = side.conn.execute(
            "UPDATE network_usage SET stored_bytes = greatest(stored_bytes - %s, 0) "
            "WHERE network_id = %s RETURNING stored_bytes", (size, nid)).fetchone() or (0,)
    return sum(count for _, count, _ in rows)


def drop_before(side: Any, cutoff: datetime) -> int:
    """Drop readings with a timestamp before `cutoff` (whole weeks; the out-of-window
    partition row by row), in the writer's transaction. Returns the readings removed."""
    conn = side.conn
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
    limit = to_us(cutoff)
    removed = 0
    for week in sorted(existing_weeks(conn)):
        if week_bounds(week)[1] > limit:
            continue
        name = partition_name(week)
        removed += _subtract(side, name)
        conn.execute(f"DROP TABLE {name}")
    removed += _subtract(side, "state_log_other", "l.ts_us < %s", (limit,))
    conn.execute("DELETE FROM state_log_other WHERE ts_us < %s", (limit,))
    side.weeks = None  # read the partitions again
    return removed
