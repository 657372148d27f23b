"""The gateway's housekeeping tasks: the log file's rotation by date, and history retention.

History retention (`history_retention_days`, 0: keep everything) deletes readings and
commands older than that many days, hourly, through the store (`Store.drop_reports_before`:
SQLite in bounded writer steps, PostgreSQL by dropping whole week partitions, so there a
reading goes up to a week later). Each network's stored bytes shrink with what went, so a
network at its `max_stored_bytes_per_network` quota gets room back. In a cluster every node
runs it; the nodes take turns on PostgreSQL's partition lock and the later ones find nothing
left to drop. A failure (the store unreachable) is logged and tried again at the next hour.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import trio

from .logs import DAY, EventLog
from .metrics import Count
from .storage.errors import StorageError

MAINTENANCE_INTERVAL = 3600.0  # seconds between log and history retention checks


async def maintain_log(log: EventLog, *, clock: Callable[[], float] = time.time) -> None:
    """Rotate the log file by date and delete rotated files past their retention: now, then
    just after each UTC midnight and at least hourly (a quiet gateway writes no line that
    would do it). `clock`: the wall clock in epoch seconds."""
    while True:
        log.maintain()
        await trio.sleep(min(MAINTENANCE_INTERVAL, DAY - clock() % DAY + 1.0))


async def expire_history(store: Any, days: int, now: datetime, *, log: EventLog,
                         expired: Count) -> int:
    """Drop the history stamped more than `days` days before `now`; log and count what
    went. Returns the rows removed (0 after a failure, which is logged)."""
    cutoff = now - timedelta(days=days)
    try:
        removed = await store.drop_reports_before(cutoff)
    except StorageError as exc:
        log.emit("history_retention_failed", detail=str(exc))
        return 0
    if removed:
        expired.inc(removed)
        log.emit("history_expired", removed=removed, before=cutoff.isoformat())
    return removed


async def maintain_history(store: Any, days: int, *, log: EventLog, expired: Count,
                           clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
    """Run `expire_history` now and then every `MAINTENANCE_INTERVAL` seconds, forever."""
    while True:
        await expire_history(store, days, clock(), log=log, expired=expired)
        await trio.sleep(MAINTENANCE_INTERVAL)
