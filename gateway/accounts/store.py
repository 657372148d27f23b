"""The accounts file (`<data>/accounts.db`): accounts, owner codes, ownership and sessions.

Why a file of its own rather than tables in the device store: the device store is written by
one writer thread fed by the ingest hot path, backed up and restored as a unit, and its
erasure is per network. Accounts are few, written rarely, carry personal data under another
key, and must be erasable per person at once. A separate SQLite file keeps the hot store's
schema and writer untouched and lets a backup hold devices without people (docs/privacy.md).
With a PostgreSQL store the same operations run on tables of that database (`pgstore.py`);
what both share (sealing, checks, the operations' SQL) is `base.py`.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from .base import (
    DETAIL_FIELDS,
    MAX_DETAIL,
    MAX_EMAIL,
    ROLES,
    Account,
    AccountsBase,
    Session,
    code_hash,
)
from .datakey import DataKey

__all__ = ["DETAIL_FIELDS", "MAX_DETAIL", "MAX_EMAIL", "ROLES", "Account", "AccountStore",
           "Session", "code_hash"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id          INTEGER PRIMARY KEY,
    lookup      BLOB NOT NULL UNIQUE,      -- HMAC of the email (datakey.lookup)
    role        TEXT NOT NULL CHECK (role IN ('operator', 'owner')),
    email       BLOB NOT NULL,             -- AES-GCM, purpose b"email"
    details     BLOB,                      -- AES-GCM of JSON, purpose b"details"
    password    TEXT NOT NULL,             -- Argon2id encoded hash
    created_us  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS owner_codes (
    network     TEXT PRIMARY KEY,          -- network UUID
    code_hash   BLOB NOT NULL UNIQUE,      -- SHA-256 of the owner code (from the certificate)
    owner_id    INTEGER REFERENCES accounts(id),
    claimed_us  INTEGER
);
CREATE INDEX IF NOT EXISTS owner_codes_by_owner ON owner_codes(owner_id);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash  BLOB PRIMARY KEY,          -- SHA-256 of the cookie value
    account_id  INTEGER NOT NULL REFERENCES accounts(id),
    csrf        TEXT NOT NULL,
    created_us  INTEGER NOT NULL,
    seen_us     INTEGER NOT NULL,
    address     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_account ON sessions(account_id);
"""


class AccountStore(AccountsBase):
    """The accounts in one SQLite file (one connection; calls are serialised by the caller's
    capacity limiter, and by SQLite's own lock across processes)."""

    _integrity_error: ClassVar[type[Exception]] = sqlite3.IntegrityError

    def __init__(self, path: Path, key: DataKey, *, now_us: Callable[[], int]) -> None:
        super().__init__(key, now_us=now_us)
        self.path = Path(path)
        # Only ciphertexts and hashes inside, yet nobody else's business: 0600 from the start
        # (SQLite gives its -wal and -shm files the database file's mode).
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    @classmethod
    def in_folder(cls, data: Path, *, now_us: Callable[[], int],
                  key: Path | None = None) -> AccountStore:
        """The accounts of a data folder: `accounts.db` under the data key at `key` (default
        `<data>/data.key`), both made if new."""
        key_path = Path(key) if key is not None else Path(data) / "data.key"
        return cls(Path(data) / "accounts.db", DataKey.open(key_path), now_us=now_us)

    def close(self) -> None:
        self._db.close()

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        return self._db.execute(sql, params).fetchone()

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, params).fetchall()

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        return self._db.execute(sql, params).rowcount

    def _many(self, sql: str, params: Iterable[tuple[Any, ...]]) -> None:
        self._db.executemany(sql, params)

    @contextmanager
    def _tx(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _after_erase(self) -> None:
        # Deleted pages may still hold the ciphertexts; VACUUM rewrites the file without them.
        self._db.execute("VACUUM")
