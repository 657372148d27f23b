"""The audit trail (gateway/storage/sql/audit_ops.py) on a plain `sqlite3` connection, for
callers outside the store (`fleet-gateway account`, `audit show|verify`).

`append` must run in a write transaction (`BEGIN IMMEDIATE`), so two appends never chain
onto the same predecessor, also when another process appends to the same file: the last
entry is read inside the write lock.
"""

from __future__ import annotations

from ..sql.audit_ops import OnConnection
from .dialect import SQLiteDialect

_ON_SQLITE = OnConnection(SQLiteDialect)
append, entries, verify = _ON_SQLITE.append, _ON_SQLITE.entries, _ON_SQLITE.verify

__all__ = ["append", "entries", "verify"]
