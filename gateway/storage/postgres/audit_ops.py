"""The audit trail (gateway/storage/sql/audit_ops.py) on a plain psycopg connection, for
callers outside the store (`fleet-gateway account --store URL`, `audit show|verify`)."""

from __future__ import annotations

from ..sql.audit_ops import OnConnection
from .dialect import PostgresDialect

_ON_POSTGRES = OnConnection(PostgresDialect)
append, entries, verify = _ON_POSTGRES.append, _ON_POSTGRES.entries, _ON_POSTGRES.verify

__all__ = ["append", "entries", "verify"]
