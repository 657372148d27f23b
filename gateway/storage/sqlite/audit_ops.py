"""The audit trail in SQLite: the append the writer applies, and the reads.

Appends run in the writer's transaction (`BEGIN IMMEDIATE`), so two appends never chain
onto the same predecessor, also when another process (`fleet-gateway account ...`) appends
to the same file: the last entry is read inside the write lock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..audit import AuditEntry, AuditRecord, chain, check, stamp

_COLUMNS = "seq, at, actor, action, subject, details, prev_hash, hash"


def append(conn: sqlite3.Connection, record: AuditRecord) -> int:
    """Chain `record`'s events onto the trail inside the caller's write transaction; return
    the last entry's seq."""
    last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    rows = chain(record, last)
    conn.executemany(f"INSERT INTO audit ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)", rows)
    return rows[-1][0] if rows else (last[0] if last else 0)


@dataclass(frozen=True, slots=True)
class AppendAudit:
    """The writer operation of one `AuditRecord` (its own, or a batch's, transaction)."""

    record: AuditRecord

    def apply(self, side: Any) -> int:
        return append(side.conn, self.record)


def entries(conn: sqlite3.Connection, since: datetime | None = None, limit: int | None = None,
            after: int = 0) -> Iterator[AuditEntry]:
    """Stored entries in chain order, from `since` on and after seq `after` (unchecked)."""
    sql = f"SELECT {_COLUMNS} FROM audit WHERE seq > ?"
    args: list[Any] = [after]
    if since is not None:
        sql += " AND at >= ?"
        args.append(stamp(since))
    sql += " ORDER BY seq" + (" LIMIT ?" if limit is not None else "")
    if limit is not None:
        args.append(limit)
    for row in conn.execute(sql, args):
        yield AuditEntry(*row)


def newest(conn: sqlite3.Connection, before: int | None, limit: int) -> list[AuditEntry]:
    """Up to `limit` entries with seq below `before` (None: the newest), newest first."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM audit WHERE seq < ? ORDER BY seq DESC "
                        "LIMIT ?", (before if before is not None else 2**62, limit))
    return [AuditEntry(*row) for row in rows]


def verify(conn: sqlite3.Connection) -> int:
    """Check the whole chain; return its length. Raises AuditBroken."""
    return check(conn.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY seq"))
