"""What both account stores share: the records, the checks on input, the sealing of personal
data, and every operation written once over a small engine seam.

An engine (SQLite in `store.py`, PostgreSQL in `pgstore.py`) supplies a connection and five
primitives: `_one` (first row or None), `_rows` (all rows), `_run` (row count), `_many`
(executemany) and `_tx` (a transaction as a context manager), plus its table names and the
exception its unique constraints raise. The SQL below is the dialect both engines speak
(RETURNING, ON CONFLICT DO NOTHING); it is written with `?` placeholders and `{table}` names,
which `AccountsBase._sql` turns into the engine's own (PostgreSQL: `%s`, `console_*`).

Sealing (docs/privacy.md): the email address and the optional details are AES-GCM under the
data key (`datakey`), the email is found by its keyed hash (`DataKey.lookup`), the password
is an Argon2id hash (`passwords`), a session is kept as the SHA-256 of its cookie token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

from . import passwords
from .datakey import DataKey
from .errors import AccountError, AccountExists, BadLogin, OwnerCodeRefused

ROLES = ("operator", "owner")
DETAIL_FIELDS = ("name", "phone", "address")
MAX_DETAIL = 500
MAX_EMAIL = 254


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


class AccountsBase:
    """The account store's contract, engine-neutral. Every call is synchronous and short (one
    small transaction); the gateway runs them in a worker thread. `now_us` is the clock."""

    TABLES: ClassVar[dict[str, str]] = {
        "accounts": "accounts", "owner_codes": "owner_codes", "sessions": "sessions"}
    PLACEHOLDER: ClassVar[str] = "?"
    _integrity_error: ClassVar[type[Exception]] = Exception

    def __init__(self, key: DataKey, *, now_us: Callable[[], int]) -> None:
        self.key = key
        self._now = now_us

    # -- the engine seam ----------------------------------------------------------------

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        raise NotImplementedError

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        raise NotImplementedError

    def _many(self, sql: str, params: Iterable[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def _tx(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _after_erase(self) -> None:
        """Called after rows of personal data were deleted (SQLite: VACUUM the file)."""

    def close(self) -> None:
        raise NotImplementedError

    @classmethod
    def _sql(cls, template: str) -> str:
        return _render(template, cls.PLACEHOLDER, tuple(sorted(cls.TABLES.items())))

    # -- accounts ------------------------------------------------------------------------

    def add(self, email: str, password: str, role: str,
            details: dict[str, str] | None = None) -> Account:
        """A new account. Raises AccountExists (same email, any case), AccountError (not an
        email address, unknown role or detail, password length)."""
        email = _email(email)
        if role not in ROLES:
            raise AccountError(f"role must be one of {ROLES}")
        _check_password(password)
        details = _details(details or {})
        try:
            with self._tx():
                row = self._one(self._sql(
                    "INSERT INTO {accounts} (lookup, role, email, details, password, created_us) "
                    "VALUES (?, ?, ?, ?, ?, ?) RETURNING id"),
                    (self.key.lookup(email), role, self.key.encrypt(email.encode(), b"email"),
                     self._seal_details(details), passwords.hash_password(password),
                     self._now()))
        except self._integrity_error:
            raise AccountExists("an account with this email address exists") from None
        assert row is not None
        return self.get(row[0])

    def get(self, account_id: int) -> Account:
        row = self._one(self._sql(
            "SELECT id, role, email, details, created_us FROM {accounts} WHERE id = ?"),
            (account_id,))
        if row is None:
            raise AccountError("no such account")
        return self._account(row)

    def all(self) -> list[tuple[int, str, int]]:
        """(id, role, created_us) of every account: what an operator's list needs, nothing
        decrypted."""
        return self._rows(self._sql("SELECT id, role, created_us FROM {accounts} ORDER BY id"))

    def authenticate(self, email: str, password: str) -> Account:
        """The account, or BadLogin whether the email is unknown or the password wrong (same
        work done either way: an Argon2id verification)."""
        if len(password) > passwords.MAX_LENGTH:
            passwords.verify_dummy("")
            raise BadLogin("unknown email or wrong password")
        row = self._one(self._sql("SELECT id, password FROM {accounts} WHERE lookup = ?"),
                        (self.key.lookup(email),))
        if row is None:
            passwords.verify_dummy(password)
            raise BadLogin("unknown email or wrong password")
        if not passwords.verify(row[1], password):
            raise BadLogin("unknown email or wrong password")
        if passwords.needs_rehash(row[1]):
            self._run(self._sql("UPDATE {accounts} SET password = ? WHERE id = ?"),
                      (passwords.hash_password(password), row[0]))
        return self.get(row[0])

    def correct(self, account_id: int, details: dict[str, str]) -> Account:
        """Replace the optional personal details (right to rectification)."""
        self._run(self._sql("UPDATE {accounts} SET details = ? WHERE id = ?"),
                  (self._seal_details(_details(details)), account_id))
        return self.get(account_id)

    def change_password(self, account_id: int, old: str, new: str,
                        keep_session: str | None = None) -> int:
        """Change the password; end every session of the account but `keep_session` (a
        token). Returns how many sessions ended."""
        row = self._one(self._sql("SELECT password FROM {accounts} WHERE id = ?"),
                        (account_id,))
        if row is None or not passwords.verify(row[0], old):
            raise BadLogin("wrong password")
        _check_password(new)
        keep = token_hash(keep_session) if keep_session else b""
        with self._tx():
            self._run(self._sql("UPDATE {accounts} SET password = ? WHERE id = ?"),
                      (passwords.hash_password(new), account_id))
            return self._run(self._sql(
                "DELETE FROM {sessions} WHERE account_id = ? AND token_hash != ?"),
                (account_id, keep))

    def delete(self, account_id: int, *, release: bool = False) -> list[str]:
        """Erase the account, its sessions and its owner-code rows; return the UUIDs of the
        networks it owned (the caller erases their data from the device store). With
        `release`, those networks' rows stay, unowned: their owner codes work again."""
        with self._tx():
            owned = [r[0] for r in self._rows(self._sql(
                "SELECT network FROM {owner_codes} WHERE owner_id = ? ORDER BY network"),
                (account_id,))]
            self._run(self._sql("DELETE FROM {sessions} WHERE account_id = ?"), (account_id,))
            if release:
                self._run(self._sql("UPDATE {owner_codes} SET owner_id = NULL, "
                                    "claimed_us = NULL WHERE owner_id = ?"), (account_id,))
            else:
                self._run(self._sql("DELETE FROM {owner_codes} WHERE owner_id = ?"),
                          (account_id,))
            self._run(self._sql("DELETE FROM {accounts} WHERE id = ?"), (account_id,))
        self._after_erase()
        return owned

    # -- owning networks -------------------------------------------------------------------

    def record_owner_code(self, network: str, digest: bytes) -> bool:
        """Remember a network's owner-code hash (from its certificate, at first connection).
        True when recorded now; a network keeps its first hash."""
        return self._run(self._sql(
            "INSERT INTO {owner_codes} (network, code_hash) VALUES (?, ?) "
            "ON CONFLICT DO NOTHING"), (network, digest)) == 1

    def record_owner_codes(self, batch: dict[str, bytes]) -> None:
        """`record_owner_code` for many networks in one transaction."""
        with self._tx():
            self._many(self._sql(
                "INSERT INTO {owner_codes} (network, code_hash) VALUES (?, ?) "
                "ON CONFLICT DO NOTHING"), list(batch.items()))

    def claim(self, account_id: int, code: str) -> str:
        """Make the account the owner of the network whose code this is; return its UUID.

        Raises:
            OwnerCodeRefused: unknown code, or one used already (one answer for both).
        """
        with self._tx():
            row = self._one(self._sql(
                "UPDATE {owner_codes} SET owner_id = ?, claimed_us = ? "
                "WHERE code_hash = ? AND owner_id IS NULL RETURNING network"),
                (account_id, self._now(), code_hash(code)))
        if row is None:
            raise OwnerCodeRefused("unknown or already used owner code")
        return row[0]

    def owns(self, account_id: int, network: str) -> bool:
        return self._one(self._sql(
            "SELECT 1 FROM {owner_codes} WHERE owner_id = ? AND network = ?"),
            (account_id, network)) is not None

    def networks_of(self, account_id: int) -> list[str]:
        return [r[0] for r in self._rows(self._sql(
            "SELECT network FROM {owner_codes} WHERE owner_id = ? ORDER BY network"),
            (account_id,))]

    def forget_network(self, network: str) -> None:
        """Drop a network's owner-code row (when the network is erased)."""
        self._run(self._sql("DELETE FROM {owner_codes} WHERE network = ?"), (network,))

    # -- sessions ----------------------------------------------------------------------------

    def open_session(self, account_id: int, address: str) -> tuple[str, Session]:
        """A new session: (the cookie token, the session with its CSRF token)."""
        token = secrets.token_urlsafe(32)
        now = self._now()
        self._run(self._sql(
            "INSERT INTO {sessions} (token_hash, account_id, csrf, created_us, seen_us, "
            "address) VALUES (?, ?, ?, ?, ?, ?)"),
            (token_hash(token), account_id, secrets.token_urlsafe(32), now, now, address))
        session = self.session(token)
        assert session is not None
        return token, session

    def session(self, token: str, *, max_idle_us: int | None = None) -> Session | None:
        """The live session of a cookie token, or None (unknown, revoked or idle too long)."""
        row = self._one(self._sql(
            "SELECT token_hash, account_id, csrf, created_us, seen_us, address "
            "FROM {sessions} WHERE token_hash = ?"), (token_hash(token),))
        if row is None:
            return None
        digest = bytes(row[0])
        now = self._now()
        if max_idle_us is not None and now - row[4] > max_idle_us:
            self._run(self._sql("DELETE FROM {sessions} WHERE token_hash = ?"), (digest,))
            return None
        self._run(self._sql("UPDATE {sessions} SET seen_us = ? WHERE token_hash = ?"),
                  (now, digest))
        return Session(digest[:8].hex(), row[1], row[2], row[3], now, row[5])

    def sessions_of(self, account_id: int) -> list[Session]:
        return [Session(bytes(r[0])[:8].hex(), account_id, "", r[1], r[2], r[3])
                for r in self._rows(self._sql(
                    "SELECT token_hash, created_us, seen_us, address FROM {sessions} "
                    "WHERE account_id = ? ORDER BY created_us"), (account_id,))]

    def revoke_session(self, account_id: int, session_id: str) -> bool:
        """End one of the account's own sessions by its public id."""
        for (digest,) in self._rows(self._sql(
                "SELECT token_hash FROM {sessions} WHERE account_id = ?"), (account_id,)):
            if hmac.compare_digest(bytes(digest)[:8].hex(), session_id):
                self._run(self._sql("DELETE FROM {sessions} WHERE token_hash = ?"),
                          (bytes(digest),))
                return True
        return False

    def end_session(self, token: str) -> None:
        self._run(self._sql("DELETE FROM {sessions} WHERE token_hash = ?"),
                  (token_hash(token),))

    # -- key rotation ------------------------------------------------------------------------

    def rotate_key(self) -> str:
        """Encrypt every row under a fresh data key, recompute the lookup hashes, then drop
        the old key from the key file. Returns the new key id."""
        new = self.key.rotate()
        with self._tx():
            for account_id, email, details in self._rows(self._sql(
                    "SELECT id, email, details FROM {accounts}")):
                self._run(self._sql(
                    "UPDATE {accounts} SET lookup = ?, email = ?, details = ? WHERE id = ?"),
                    (*self._reseal(new, bytes(email), details), account_id))
            self._rotated(new)
        self.key = new.drop_old()
        self._after_erase()
        return self.key.current_id

    def _rotated(self, new: DataKey) -> None:
        """Inside rotate_key's transaction, once every row is sealed under `new`."""

    def _reseal(self, new: DataKey, email: bytes, details: Any
                ) -> tuple[bytes, bytes, bytes | None]:
        plain = self.key.decrypt(email, b"email")
        sealed = (new.encrypt(self.key.decrypt(bytes(details), b"details"), b"details")
                  if details is not None else None)
        return new.lookup(plain.decode()), new.encrypt(plain, b"email"), sealed

    # -- helpers -----------------------------------------------------------------------------

    def _account(self, row: tuple[Any, ...]) -> Account:
        details = (json.loads(self.key.decrypt(bytes(row[3]), b"details"))
                   if row[3] is not None else {})
        return Account(row[0], row[1], self.key.decrypt(bytes(row[2]), b"email").decode(),
                       details, row[4])

    def _seal_details(self, details: dict[str, str]) -> bytes | None:
        if not details:
            return None
        return self.key.encrypt(json.dumps(details, sort_keys=True).encode(), b"details")


@cache
def _render(template: str, placeholder: str, tables: tuple[tuple[str, str], ...]) -> str:
    sql = template.format(**dict(tables))
    return sql if placeholder == "?" else sql.replace("?", placeholder)


def token_hash(token: str) -> bytes:
    """How a session's cookie token is stored: its SHA-256 (a dump holds no live cookie)."""
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
