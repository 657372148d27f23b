"""The seam between the SQL written once (this package) and the two engines.

The shared operations and queries speak one SQL: `?` placeholders and what SQLite and
PostgreSQL both take (`INSERT ... ON CONFLICT`, `RETURNING`, `CASE`, row values). They reach
the database through a `Dialect`: one engine's DB-API connection plus the few things that
engine spells its own way. Each engine package subclasses it (sqlite/dialect.py,
postgres/dialect.py); nothing else in the shared code knows which engine it runs on.

What a dialect answers for:
- placeholders: SQLite takes the `?` as written; psycopg wants `%s`, translated once per
  statement text and cached (`translate_placeholders`);
- UUIDs: TEXT in SQLite (bound as str, read back with `UUID()`), the `uuid` type in
  PostgreSQL (psycopg binds and returns `uuid.UUID`);
- a list of ids bound as one parameter (`id_in`, `id_list`): `= ANY(array)` in PostgreSQL,
  `IN (SELECT value FROM json_each(json))` in SQLite;
- text ordered by its bytes (`byte_order`): PostgreSQL needs `COLLATE "C"`, SQLite's
  default collation compares bytes already;
- the connection API: `executemany` (a cursor's in psycopg) and `snapshot` (SQLite reads
  open their own transaction; PostgreSQL reads run in the reader pool's);
- the few statements with no common spelling: the newest reading of each state
  (`LATEST_STATES`), the fan-out inserts of a queued message (`add_sessions`,
  `insert_refs`), and serialising audit appends (`lock_audit_trail`).

What the writer does beyond this (SQLite's BEGIN IMMEDIATE, busy retries, WAL purge;
PostgreSQL's COPY, partitions, row locks, reconnection) stays in each engine's `WriteSide`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any
from uuid import UUID


class Dialect:
    """One engine's connection, spoken to in the shared SQL (see the module docstring).

    Subclasses set `LATEST_STATES` and `byte_order` and implement the methods below; the
    connection stays reachable as `conn` for what is engine-specific.
    """

    __slots__ = ("conn",)

    LATEST_STATES: str
    """SQL, one `?` (the network's UUID): per state of the network with a reading, the
    newest by (ts_us, id): state uuid, kind, value uuid, id, ts_us, received_us, data."""

    byte_order: str = ""
    """Appended to an ORDER BY of a text column: order by the text's bytes."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement (`?` placeholders); returns the engine's cursor."""
        raise NotImplementedError

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each of `rows` (none: nothing runs)."""
        raise NotImplementedError

    def snapshot(self) -> AbstractContextManager[Any]:
        """A context in which several reads see one committed state."""
        raise NotImplementedError

    def uuid_in(self, value: UUID) -> Any:
        """`value` as this engine binds a uuid column."""
        raise NotImplementedError

    def uuid_out(self, column: Any) -> UUID:
        """A uuid column as read back."""
        raise NotImplementedError

    def id_in(self, column: str) -> str:
        """SQL: `column` is one of the ids bound (with `id_list`) at one `?`."""
        raise NotImplementedError

    def id_list(self, ids: Iterable[int]) -> Any:
        """The parameter for `id_in`."""
        raise NotImplementedError

    def lock_audit_trail(self) -> None:
        """Hold the audit trail until the transaction ends, so two appends (two processes,
        two nodes) never chain onto the same predecessor."""
        raise NotImplementedError

    def add_sessions(self, network_id: int, client_ids: Sequence[str]) -> None:
        """Create the sessions `client_ids` of a network that do not exist yet."""
        raise NotImplementedError

    def insert_refs(self, network_id: int, message_id: int, retain: bool,
                    copies: Sequence[tuple[str, int]]) -> list[int]:
        """Insert one `queued_refs` row per (client id, qos) of `copies`; return their ids
        in the order of `copies`."""
        raise NotImplementedError


def translate_placeholders(sql: str, cache: dict[str, str]) -> str:
    """`sql` with each `?` as `%s` (psycopg's placeholder), from `cache` after the first time.

    The shared SQL holds no `%` and no `?` but placeholders (no literal text that could
    hold one), so a plain replace is exact; a `%` would be psycopg's escape and is refused.
    The cache is bounded by the statement texts in the code (values are never spliced in).
    """
    out = cache.get(sql)
    if out is None:
        if "%" in sql:
            raise ValueError(f"a '%' in shared SQL: {sql!r}")
        out = cache[sql] = sql.replace("?", "%s")
    return out

