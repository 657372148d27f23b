"""The shared SQL's dialect on PostgreSQL (gateway/storage/sql/dialect.py says what one is)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from typing import Any
from uuid import UUID

import psycopg

from ..sql.dialect import Dialect, translate_placeholders

AUDIT_LOCK = 0x666C6565_7461  # advisory lock key: one audit append at a time

_STATEMENTS: dict[str, str] = {}  # shared SQL text -> psycopg's (see translate_placeholders)


class PostgresDialect(Dialect):
    """A psycopg 3 connection in the shared SQL."""

    __slots__ = ()

    # LATERAL: one index walk per state (newest first), across the week partitions.
    LATEST_STATES = (
        "SELECT s.uuid, s.kind, v.uuid, l.id, l.ts_us, l.received_us, l.data FROM states s "
        "JOIN value_nodes v ON v.id = s.value_id JOIN networks n ON n.id = s.network_id "
        "CROSS JOIN LATERAL (SELECT id, ts_us, received_us, data FROM state_log "
        "WHERE state_id = s.id ORDER BY ts_us DESC, id DESC LIMIT 1) l "
        "WHERE n.uuid = ?")

    # PostgreSQL's default collation orders text by locale; SQLite's, and the Store
    # contract's, by bytes.
    byte_order = ' COLLATE "C"'

    conn: psycopg.Connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor:
        return self.conn.execute(translate_placeholders(sql, _STATEMENTS), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self.conn.cursor() as cur:
                cur.executemany(translate_placeholders(sql, _STATEMENTS), rows)

    def snapshot(self) -> nullcontext[None]:
        """Nothing to open: every read runs in its own REPEATABLE READ transaction (the
        store's reader pool)."""
        return nullcontext()

    def uuid_in(self, value: UUID) -> UUID:
        return value

    def uuid_out(self, column: UUID) -> UUID:
        return column

    def id_in(self, column: str) -> str:
        return f"{column} = ANY(?)"

    def id_list(self, ids: Iterable[int]) -> list[int]:
        return list(ids)

    def lock_audit_trail(self) -> None:
        self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_LOCK,))

    def add_sessions(self, network_id: int, client_ids: Sequence[str]) -> None:
        self.conn.execute(
            "INSERT INTO sessions (network_id, client_id) "
            "SELECT %s, c FROM unnest(%s::text[]) c ON CONFLICT DO NOTHING",
            (network_id, list(client_ids)))

    def insert_refs(self, network_id: int, message_id: int, retain: bool,
                    copies: Sequence[tuple[str, int]]) -> list[int]:
        rows = self.conn.execute(
            "INSERT INTO queued_refs (network_id, client_id, message_id, qos, retain) "
            "SELECT %s, c, %s, q, %s FROM unnest(%s::text[], %s::int2[]) "
            "WITH ORDINALITY AS t(c, q, n) ORDER BY n RETURNING id",
            (network_id, message_id, bool(retain), [c for c, _ in copies],
             [q for _, q in copies])).fetchall()
        return sorted(i for (i,) in rows)  # ids follow the copies' order (one sequence)


__all__ = ["AUDIT_LOCK", "PostgresDialect"]
