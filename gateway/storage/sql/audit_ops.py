"""The audit trail in SQL (both engines): the append the writer applies, and the reads.

The entry shape and hash chain are gateway/storage/audit.py's. An append reads the last
entry and chains onto it inside the writer's transaction, holding the trail
(`Dialect.lock_audit_trail`) so that two appends never chain onto the same predecessor,
also from two processes or two nodes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..audit import AuditEntry, AuditRecord, chain, check, stamp
from .dialect import Dialect

_COLUMNS = "seq, at, actor, action, subject, details, prev_hash, hash"


def append(db: Dialect, record: AuditRecord) -> int:
    """Chain `record`'s events onto the trail inside the caller's write transaction; return
    the last entry's seq."""
    db.lock_audit_trail()
    last = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    rows = chain(record, last)
    db.executemany(f"INSERT INTO audit ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return rows[-1][0] if rows else (last[0] if last else 0)


@dataclass(frozen=True, slots=True)
class AppendAudit:
    """The writer operation of one `AuditRecord` (its own, or a batch's, transaction)."""

    record: AuditRecord

    def apply(self, side: Any) -> int:
        return append(side.db, self.record)


def entries(db: Dialect, since: datetime | None = None, limit: int | None = None,
            after: int = 0) -> Iterator[AuditEntry]:
    """Stored entries in chain order, from `since` on and after seq `after` (unchecked)."""
    sql = f"SELECT {_COLUMNS} FROM audit WHERE seq > ?"
    args: list[Any] = [after]
    if since is not None:
        sql += " AND at >= ?"
        args.append(stamp(since))
    sql += " ORDER BY seq"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    for row in db.execute(sql, args):
        yield AuditEntry(*row)


def newest(db: Dialect, before: int | None, limit: int) -> list[AuditEntry]:
    """Up to `limit` entries with seq below `before` (None: the newest), newest first."""
    rows = db.execute(f"SELECT {_COLUMNS} FROM audit WHERE seq < ? ORDER BY seq DESC "
                      "LIMIT ?", (before if before is not None else 2**62, limit))
    return [AuditEntry(*row) for row in rows]


def verify(db: Dialect) -> int:
    """Check the whole chain; return its length. Raises AuditBroken."""
    return check(db.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY seq"))


class OnConnection:
    """This module's functions on a plain connection of one engine (for callers outside the
    store: `fleet-gateway account` and `audit show|verify`), wrapped in `dialect`."""

    def __init__(self, dialect: type[Dialect]) -> None:
        self._dialect = dialect

    def append(self, conn: Any, record: AuditRecord) -> int:
        """`append` inside the caller's write transaction on `conn`."""
        return append(self._dialect(conn), record)

    def entries(self, conn: Any, since: datetime | None = None, limit: int | None = None,
                after: int = 0) -> Iterator[AuditEntry]:
        return entries(self._dialect(conn), since, limit, after)

    def verify(self, conn: Any) -> int:
        """Check the whole chain; return its length. Raises AuditBroken."""
        return verify(self._dialect(conn))
