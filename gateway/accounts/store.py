"""The accounts file (`<data>/accounts.db`): accounts, owner codes, ownership and sessions.

Why a file of its own rather than tables in the device store: the device store is written by
one writer thread fed by the ingest hot path, backed up and restored as a unit, and its
erasure is per network. Accounts are few, written rarely, carry personal data under another
key, and must be erasable per person at once. A separate SQLite file keeps the hot store's
schema and writer untouched and lets a backup hold devices without people (docs/privacy.md).

Every call is synchronous and short (one small transaction); the gateway runs them in a
worker thread. `now_us` is the clock, passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import passwords
from .datakey import DataKey
from .errors import AccountError, AccountExists, BadLogin, OwnerCodeRefused

ROLES = ("operator", "owner")
DETAIL_FIELDS = ("name", "phone", "address")
MAX_DETAIL = 500
MAX_EMAIL = 254

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


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    role: str
    email: str
    details: dict[str, str]
    created_us: int


@dataclass(frozen=True, slots=True)
class Session:
    id: str  # a short public id (hash prefix) to list and revoke, never the token
    account_id: int
    csrf: str
    created_us: int
    seen_us: int
    address: str


def code_hash(code: str) -> bytes:
    """SHA-256 of an owner code as the certificate carries it: the hex digits, lower-case,
    without the dashes and spaces a person may type (ca.bundles.new_owner_code)."""
    return hashlib.sha256("".join(code.lower().replace("-", " ").split()).encode()).digest()


class AccountStore:
    def __init__(self, path: Path, key: DataKey, *, now_us: Callable[[], int]) -> None:
        self.path = Path(path)
        self.key = key
        self._now = now_us
        # Only ciphertexts and hashes inside, yet nobody else's business: 0600 from the start
        # (SQLite gives its -wal and -shm files the database file's mode).
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    @classmethod
    def in_folder(cls, data: Path, *, now_us: Callable[[], int]) -> AccountStore:
        """The accounts of a data folder: `accounts.db` under `data.key` (both made if new)."""
        return cls(Path(data) / "accounts.db", DataKey.open(Path(data) / "data.key"),
                   now_us=now_us)

    def close(self) -> None:
        self._db.close()

    # -- accounts ------------------------------------------------------------------------

    def add(self, email: str, password: str, role: str,
            details: dict[str, str] | None = None) -> Account:
        email = _email(email)
        if role not in ROLES:
            raise AccountError(f"role must be one of {ROLES}")
        _check_password(password)
        details = _details(details or {})
        try:
            cur = self._db.execute(
                "INSERT INTO accounts (lookup, role, email, details, password, created_us) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (self.key.lookup(email), role, self.key.encrypt(email.encode(), b"email"),
                 self._seal_details(details), passwords.hash_password(password), self._now()))
        except sqlite3.IntegrityError:
            raise AccountExists("an account with this email address exists") from None
        return self.get(cur.lastrowid)

    def get(self, account_id: int) -> Account:
        row = self._db.execute(
            "SELECT id, role, email, details, created_us FROM accounts WHERE id = ?",
            (account_id,)).fetchone()
        if row is None:
            raise AccountError("no such account")
        return self._account(row)

    def all(self) -> list[tuple[int, str, int]]:
        """(id, role, created_us) of every account: what an operator's list needs, nothing
        decrypted."""
        return self._db.execute("SELECT id, role, created_us FROM accounts ORDER BY id").fetchall()

    def authenticate(self, email: str, password: str) -> Account:
        """The account, or BadLogin whether the email is unknown or the password wrong (same
        work done either way: an Argon2id verification)."""
        if len(password) > passwords.MAX_LENGTH:
            passwords.verify_dummy("")
            raise BadLogin("unknown email or wrong password")
        row = self._db.execute("SELECT id, password FROM accounts WHERE lookup = ?",
                               (self.key.lookup(email),)).fetchone()
        if row is None:
            passwords.verify_dummy(password)
            raise BadLogin("unknown email or wrong password")
        if not passwords.verify(row[1], password):
            raise BadLogin("unknown email or wrong password")
        if passwords.needs_rehash(row[1]):
            self._db.execute("UPDATE accounts SET password = ? WHERE id = ?",
                             (passwords.hash_password(password), row[0]))
        return self.get(row[0])

    def correct(self, account_id: int, details: dict[str, str]) -> Account:
        """Replace the optional personal details (right to rectification)."""
        self._db.execute("UPDATE accounts SET details = ? WHERE id = ?",
                         (self._seal_details(_details(details)), account_id))
        return self.get(account_id)

    def change_password(self, account_id: int, old: str, new: str,
                        keep_session: str | None = None) -> int:
        """Change the password; end every session of the account but `keep_session` (a
        token). Returns how many sessions ended."""
        row = self._db.execute("SELECT password FROM accounts WHERE id = ?",
                               (account_id,)).fetchone()
        if row is None or not passwords.verify(row[0], old):
            raise BadLogin("wrong password")
        _check_password(new)
        keep = _token_hash(keep_session) if keep_session else b""
        with self._tx():
            self._db.execute("UPDATE accounts SET password = ? WHERE id = ?",
                             (passwords.hash_password(new), account_id))
            ended = self._db.execute(
                "DELETE FROM sessions WHERE account_id = ? AND token_hash != ?",
                (account_id, keep)).rowcount
        return ended

    def delete(self, account_id: int, *, release: bool = False) -> list[str]:
        """Erase the account, its sessions and its owner-code rows; return the UUIDs of the
        networks it owned (the caller erases their data from the device store). With
        `release`, those networks' rows stay, unowned: their owner codes work again."""
        with self._tx():
            owned = [r[0] for r in self._db.execute(
                "SELECT network FROM owner_codes WHERE owner_id = ?", (account_id,))]
            self._db.execute("DELETE FROM sessions WHERE account_id = ?", (account_id,))
            if release:
                self._db.execute("UPDATE owner_codes SET owner_id = NULL, claimed_us = NULL "
                                 "WHERE owner_id = ?", (account_id,))
            else:
                self._db.execute("DELETE FROM owner_codes WHERE owner_id = ?", (account_id,))
            self._db.execute("DELETE FROM accounts WHERE id = ?", (account_id,))
        # Deleted pages may still hold the ciphertexts; VACUUM rewrites the file without them.
        self._db.execute("VACUUM")
        return owned

    # -- owning networks -------------------------------------------------------------------

    def record_owner_code(self, network: str, digest: bytes) -> bool:
        """Remember a network's owner-code hash (from its certificate, at first connection).
        True when recorded now; a network keeps its first hash."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO owner_codes (network, code_hash) VALUES (?, ?)",
            (network, digest))
        return cur.rowcount == 1

    def record_owner_codes(self, batch: dict[str, bytes]) -> None:
        """`record_owner_code` for many networks in one transaction."""
        with self._tx():
            self._db.executemany(
                "INSERT OR IGNORE INTO owner_codes (network, code_hash) VALUES (?, ?)",
                batch.items())

    def claim(self, account_id: int, code: str) -> str:
        """Make the account the owner of the network whose code this is; return its UUID.

        Raises:
            OwnerCodeRefused: unknown code, or one used already (one answer for both).
        """
        with self._tx():
            cur = self._db.execute(
                "UPDATE owner_codes SET owner_id = ?, claimed_us = ? "
                "WHERE code_hash = ? AND owner_id IS NULL RETURNING network",
                (account_id, self._now(), code_hash(code)))
            row = cur.fetchone()
        if row is None:
            raise OwnerCodeRefused("unknown or already used owner code")
        return row[0]

    def owns(self, account_id: int, network: str) -> bool:
        return self._db.execute(
            "SELECT 1 FROM owner_codes WHERE owner_id = ? AND network = ?",
            (account_id, network)).fetchone() is not None

    def networks_of(self, account_id: int) -> list[str]:
        return [r[0] for r in self._db.execute(
            "SELECT network FROM owner_codes WHERE owner_id = ? ORDER BY network",
            (account_id,))]

    def forget_network(self, network: str) -> None:
        """Drop a network's owner-code row (when the network is erased)."""
        self._db.execute("DELETE FROM owner_codes WHERE network = ?", (network,))

    # -- sessions ----------------------------------------------------------------------------

    def open_session(self, account_id: int, address: str) -> tuple[str, Session]:
        """A new session: (the cookie token, the session with its CSRF token)."""
        token = secrets.token_urlsafe(32)
        now = self._now()
        self._db.execute(
            "INSERT INTO sessions (token_hash, account_id, csrf, created_us, seen_us, address) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (_token_hash(token), account_id, secrets.token_urlsafe(32), now, now, address))
        session = self.session(token)
        assert session is not None
        return token, session

    def session(self, token: str, *, max_idle_us: int | None = None) -> Session | None:
        """The live session of a cookie token, or None (unknown, revoked or idle too long)."""
        row = self._db.execute(
            "SELECT token_hash, account_id, csrf, created_us, seen_us, address FROM sessions "
            "WHERE token_hash = ?", (_token_hash(token),)).fetchone()
        if row is None:
            return None
        now = self._now()
        if max_idle_us is not None and now - row[4] > max_idle_us:
            self._db.execute("DELETE FROM sessions WHERE token_hash = ?", (row[0],))
            return None
        self._db.execute("UPDATE sessions SET seen_us = ? WHERE token_hash = ?", (now, row[0]))
        return Session(row[0][:8].hex(), row[1], row[2], row[3], now, row[5])

    def sessions_of(self, account_id: int) -> list[Session]:
        return [Session(r[0][:8].hex(), account_id, "", r[1], r[2], r[3])
                for r in self._db.execute(
                    "SELECT token_hash, created_us, seen_us, address FROM sessions "
                    "WHERE account_id = ? ORDER BY created_us", (account_id,))]

    def revoke_session(self, account_id: int, session_id: str) -> bool:
        """End one of the account's own sessions by its public id."""
        for (token_hash,) in self._db.execute(
                "SELECT token_hash FROM sessions WHERE account_id = ?", (account_id,)).fetchall():
            if hmac.compare_digest(token_hash[:8].hex(), session_id):
                self._db.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))
                return True
        return False

    def end_session(self, token: str) -> None:
        self._db.execute("DELETE FROM sessions WHERE token_hash = ?", (_token_hash(token),))

    # -- key rotation ------------------------------------------------------------------------

    def rotate_key(self) -> str:
        """Encrypt every row under a fresh data key, recompute the lookup hashes, then drop
        the old key from the key file. Returns the new key id."""
        new = self.key.rotate()
        rows = self._db.execute("SELECT id, email, details FROM accounts").fetchall()
        with self._tx():
            for account_id, email, details in rows:
                plain = self.key.decrypt(email, b"email")
                sealed = (new.encrypt(self.key.decrypt(details, b"details"), b"details")
                          if details is not None else None)
                self._db.execute(
                    "UPDATE accounts SET lookup = ?, email = ?, details = ? WHERE id = ?",
                    (new.lookup(plain.decode()), new.encrypt(plain, b"email"), sealed,
                     account_id))
        self.key = new.drop_old()
        self._db.execute("VACUUM")
        return self.key.current_id

    # -- helpers -----------------------------------------------------------------------------

    def _account(self, row: tuple[Any, ...]) -> Account:
        details = (json.loads(self.key.decrypt(row[3], b"details")) if row[3] is not None
                   else {})
        return Account(row[0], row[1], self.key.decrypt(row[2], b"email").decode(), details,
                       row[4])

    def _seal_details(self, details: dict[str, str]) -> bytes | None:
        if not details:
            return None
        return self.key.encrypt(json.dumps(details, sort_keys=True).encode(), b"details")

    def _tx(self) -> _Tx:
        return _Tx(self._db)


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *_: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _email(email: str) -> str:
    email = email.strip()
    local, at, domain = email.rpartition("@")
    if not at or not local or "." not in domain or len(email) > MAX_EMAIL or any(
            c.isspace() for c in email):
        raise AccountError("not an email address")
    return email


def _check_password(password: str) -> None:
    if not passwords.MIN_LENGTH <= len(password) <= passwords.MAX_LENGTH:
        raise AccountError(f"a password has {passwords.MIN_LENGTH} to "
                           f"{passwords.MAX_LENGTH} characters")


def _details(details: dict[str, str]) -> dict[str, str]:
    unknown = set(details) - set(DETAIL_FIELDS)
    if unknown:
        raise AccountError(f"unknown detail(s): {', '.join(sorted(unknown))}")
    out = {}
    for name, value in details.items():
        value = str(value).strip()
        if len(value) > MAX_DETAIL:
            raise AccountError(f"{name} is longer than {MAX_DETAIL} characters")
        if value:
            out[name] = value
    return out
