"""Storage fixtures: a real store of each backend (SQLite in a tmp folder, PostgreSQL in a
fresh database of the session's server), and a small declared model.

`store` is parametrized over both backends: a test that takes it (or `open_store`, which
reopens the same store, e.g. across a restart) checks the `Store` contract on both.
Backend-specific tests open their store themselves.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from gateway.ingest import parse_model
from gateway.storage import open_sqlite_store

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)

MODEL = {"devices": [
    {"name": "thermo", "description": "kitchen", "values": [
        {"name": "temp", "permission": "r", "number": {"min": -40, "max": 125, "step": 0.5}},
        {"name": "target", "permission": "rw", "number": {"min": 5, "max": 30}},
        {"name": "firmware", "permission": "w", "blob": {"max": 1000}},
    ]},
    {"name": "door", "values": [{"name": "state", "permission": "r", "string": {"max": 8}}]},
]}

BACKENDS = ("sqlite", "postgresql")


def model_decl(doc: dict = MODEL):
    return parse_model(json.dumps(doc).encode())


@pytest.fixture
def network() -> uuid.UUID:
    return uuid.uuid4()


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def open_store(backend, tmp_path, request):
    """`open_store(**options)`: an async context manager opening THE store of this test
    (the same folder or database each call); options as `open_sqlite_store`'s (those only
    SQLite has are dropped for PostgreSQL)."""
    if backend == "sqlite":
        folder = tmp_path / "data"
        return lambda **options: open_sqlite_store(folder, **options)
    from gateway.storage.postgres import open_postgres_store

    url = request.getfixturevalue("postgres_url")

    def opener(**options):
        options.pop("checkpoint_interval", None)
        return open_postgres_store(url, **options)
    return opener


@pytest.fixture
async def store(open_store):
    async with open_store() as s:
        yield s


MIGRATION_5_COLUMNS = (("retained", "properties"), ("retained", "expires_us"),
                       ("queued_messages", "properties"), ("queued_messages", "expires_us"),
                       ("sessions", "expiry_interval"))
"""The columns migration 5 adds (a test that re-runs older migrations drops them first)."""


def session_ops_of(store):
    """The module of MQTT-state writer operations (for `store.submit`; both stores')."""
    from gateway.storage.sql import session_ops

    return session_ops


def count_rows_in(store, *tables: str) -> tuple[int, ...]:
    """Row counts of `tables` as another connection to the store sees them."""
    if type(store).__name__ == "PostgresStore":
        import psycopg

        with psycopg.connect(store.url) as conn:
            return tuple(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                         for t in tables)
    import sqlite3

    db = sqlite3.connect(store.path)
    try:
        return tuple(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables)
    finally:
        db.close()
