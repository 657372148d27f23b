"""The audit trail in PostgreSQL: the append the writer applies, and the reads.

The entry shape and hash chain are the SQLite store's (gateway/storage/audit.py). Appends run
in the writer's transaction under a transaction-scoped advisory lock, so two appends (two
gateway nodes, or a command line beside a gateway) never chain onto the same predecessor.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from ..audit import AuditEntry, AuditRecord, chain, check, stamp

_COLUMNS = "seq, at, actor, action, subject, details, prev_hash, hash"
AUDIT_LOCK = 0x666C6565_7461


def append(conn: psycopg.Connection, record: AuditRecord) -> int:
    """Chain `record`'s events onto the trail inside the caller's transaction; return the
    last entry's seq."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_LOCK,))
    last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    rows = chain(record, last)
    if rows:
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO audit ({_COLUMNS}) VALUES "
                            "(%s, %s, %s, %s, %s, %s, %s, %s)", rows)
    return rows[-1][0] if rows else (last[0] if last else 0)


@dataclass(frozen=True, slots=True)
class AppendAudit:
    """The writer operation of one `AuditRecord`."""

    record: AuditRecord

    def apply(self, side: Any) -> int:
        return append(side.conn, self.record)


def entries(conn: psycopg.Connection, since: datetime | None = None,
            limit: int | None = None, after: int = 0) -> Iterator[AuditEntry]:
    """Stored entries in chain order, from `since` on and after seq `after` (unchecked)."""
    sql = f"SELECT {_COLUMNS} FROM audit WHERE seq > %s"
    args: list[Any] = [after]
    if since is not None:
        sql += " AND at >= %s"
        args.append(stamp(since))
    sql += " ORDER BY seq"
    if limit is not None:
        sql += " LIMIT %s"
        args.append(limit)
    for row in conn.execute(sql, args):
        yield AuditEntry(*row)


def newest(conn: psycopg.Connection, before: int | None, limit: int) -> list[AuditEntry]:
    """Up to `limit` entries with seq below `before` (None: the newest), newest first."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM audit WHERE seq < %s ORDER BY seq DESC "
                        "LIMIT %s", (before if before is not None else 2**62, limit))
    return [AuditEntry(*row) for row in rows]


def verify(conn: psycopg.Connection) -> int:
    """Check the whole chain; return its length. Raises AuditBroken."""
    return check(conn.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY seq"))
