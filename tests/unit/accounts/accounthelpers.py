"""Account store fixtures over both engines: SQLite (`<tmp>/accounts.db`) and PostgreSQL (a
fresh database of the session's real server), each sealed under `<tmp>/data.key`.

`engine` is parametrized over both: a test that takes it (or `store`) checks the account
store's contract on both. `engine.raw_rows()` reads every row of the accounts' tables as
stored, and `engine.raw_dump()` the bytes someone holding the file or a dump would see.
"""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.accounts import AccountsBase, AccountStore

ENGINES = ("sqlite", "postgresql")
PG_TABLES = ("console_accounts", "console_owner_codes", "console_sessions")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


@dataclass
class Engine:
    name: str
    folder: Path
    open: Callable[..., AccountsBase]  # open(key=None, clock=None): the same store again
    raw_rows: Callable[[], list[tuple]]
    raw_dump: Callable[[], bytes]

    @property
    def key_path(self) -> Path:
        return self.folder / "data.key"


def sqlite_engine(folder: Path) -> Engine:
    def opener(key: Path | None = None, clock: Callable[[], int] | None = None
               ) -> AccountsBase:
        return AccountStore.in_folder(folder, key=key, now_us=clock or Clock())

    def raw_rows() -> list[tuple]:
        db = sqlite3.connect(folder / "accounts.db")
        try:
            tables = [r[0] for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")]
            return [row for t in tables for row in db.execute(f"SELECT * FROM {t}")]
        finally:
            db.close()

    return Engine("sqlite", folder, opener, raw_rows,
                  lambda: (folder / "accounts.db").read_bytes())


def postgres_engine(folder: Path, url: str, bin_dir: Path) -> Engine:
    import psycopg

    from gateway.accounts.pgstore import PostgresAccountStore

    def opener(key: Path | None = None, clock: Callable[[], int] | None = None
               ) -> AccountsBase:
        return PostgresAccountStore.open(url, key or folder / "data.key",
                                         now_us=clock or Clock())

    def raw_rows() -> list[tuple]:
        with psycopg.connect(url) as conn:
            return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                    for t in PG_TABLES for row in conn.execute(f"SELECT * FROM {t}")]

    def raw_dump() -> bytes:
        return subprocess.run([str(bin_dir / "pg_dump"), "--dbname", url], check=True,
                              capture_output=True).stdout

    return Engine("postgresql", folder, opener, raw_rows, raw_dump)


@pytest.fixture(params=ENGINES)
def engine(request, tmp_path) -> Engine:
    folder = tmp_path / "accounts"
    folder.mkdir()
    if request.param == "sqlite":
        return sqlite_engine(folder)
    server = request.getfixturevalue("postgres_server")
    return postgres_engine(folder, request.getfixturevalue("postgres_url"), server.bin_dir)


@pytest.fixture
def store(engine):
    s = engine.open()
    yield s
    s.close()
