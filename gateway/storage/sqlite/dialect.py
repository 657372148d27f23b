"""The shared SQL's dialect on SQLite (gateway/storage/sql/dialect.py says what one is)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from uuid import UUID

from ..sql.dialect import Dialect


class SQLiteDialect(Dialect):
    """A `sqlite3` connection (autocommit mode: `isolation_level=None`) in the shared SQL."""

    __slots__ = ("execute", "executemany")

    # The correlated subquery walks the (state_id, ts_us) index once per state.
    LATEST_STATES = (
        "SELECT s.uuid, s.kind, v.uuid, l.id, l.ts_us, l.received_us, l.data FROM states s "
        "JOIN value_nodes v ON v.id = s.value_id JOIN networks n ON n.id = s.network_id "
        "JOIN state_log l ON l.id = (SELECT id FROM state_log WHERE state_id = s.id "
        "ORDER BY ts_us DESC, id DESC LIMIT 1) "
        "WHERE n.uuid = ?")

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(conn)
        # SQLite takes the shared SQL as written: the connection's own methods, no wrapper.
        self.execute = conn.execute
        self.executemany = conn.executemany

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN")
        try:
            yield self.conn
        finally:
            self.conn.execute("COMMIT")

    def uuid_in(self, value: UUID) -> str:
        return str(value)

    def uuid_out(self, column: str) -> UUID:
        return UUID(column)

    def id_in(self, column: str) -> str:
        return f"{column} IN (SELECT value FROM json_each(?))"

    def id_list(self, ids: Iterable[int]) -> str:
        return json.dumps(list(ids))

    def lock_audit_trail(self) -> None:
        """Nothing to do: appends run in the writer's `BEGIN IMMEDIATE`, which holds the
        file's write lock (also against another process, e.g. `fleet-gateway account`)."""

    def add_sessions(self, network_id: int, client_ids: Sequence[str]) -> None:
        self.conn.executemany(
            "INSERT INTO sessions (network_id, client_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(network_id, client) for client in client_ids])

    def insert_refs(self, network_id: int, message_id: int, retain: bool,
                    copies: Sequence[tuple[str, int]]) -> list[int]:
        execute = self.conn.execute
        return [execute(
            "INSERT INTO queued_refs (network_id, client_id, message_id, qos, retain) "
            "VALUES (?, ?, ?, ?, ?)", (network_id, client, message_id, qos, retain)).lastrowid
            for client, qos in copies]


__all__ = ["SQLiteDialect"]
