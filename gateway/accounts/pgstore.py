"""The accounts in the PostgreSQL store: the same contract as `AccountStore`, for a cluster.

Every node of a cluster reads and writes the same `console_*` tables (`pgschema`), so an
account made through one node signs in through any other, and a session cookie issued by one
is honoured by all. The sealing is the same as in SQLite (`base.py`): what the database holds
is ciphertexts, keyed hashes, Argon2id hashes and token hashes; the data key stays in a file
on each node (`data_key`, the same file copied to every node) and never enters the database,
so a dump alone names nobody. The database keeps only the key's id (`console_data_key`): a
node whose key file lacks it refuses to start its console (`DataKeyError`) rather than seal
rows the other nodes cannot open.

One psycopg connection (autocommit) per store, guarded by a lock: calls are synchronous and
short, from the console's worker thread and the owner-code sink's (the gateway serialises
them already). Before each call a connection the server ended while idle (a restart, a
failover) is replaced. A read that fails because the connection was lost meanwhile is
retried once on a fresh one; a write is not (it may have been applied): it raises
`AccountsUnavailable`, which the console answers as a failed request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ..storage.postgres.ops import ended_by_server
from . import pgschema
from .base import AccountsBase
from .datakey import DataKey
from .errors import AccountsUnavailable, DataKeyError

# TCP keepalives unless the URL sets its own: a server that vanished without closing the
# connection is noticed in about half a minute, not hours.
_KEEPALIVES = {"keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5",
               "keepalives_count": "3", "connect_timeout": "5"}


def connect(url: str) -> psycopg.Connection[Any]:
    """An autocommit connection to `url`; raises AccountsUnavailable with libpq's reason."""
    try:
        given = conninfo_to_dict(url)
        options = {k: v for k, v in _KEEPALIVES.items() if k not in given}
        return psycopg.connect(url, autocommit=True, application_name="fleetgate-console",
                               **options)
    except psycopg.Error as exc:
        raise AccountsUnavailable(f"cannot reach PostgreSQL: {_first_line(exc)}") from None


def bind_key(conn: psycopg.Connection[Any], path: Path) -> DataKey:
    """The data key at `path`, checked against the id the database records (recorded, and the
    file created 0600 if missing, when the database has none yet: the first node).

    Raises:
        DataKeyError: the file is missing, too open or malformed, or lacks the recorded key.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (pgschema.LOCK_ID,))
        row = conn.execute("SELECT key_id FROM console_data_key").fetchone()
        if row is None:
            key = DataKey.open(path)
            conn.execute("INSERT INTO console_data_key (key_id) VALUES (%s)",
                         (bytes.fromhex(key.current_id),))
            return key
    recorded = bytes(row[0]).hex()
    try:
        key = DataKey.open(path, create=False)
    except DataKeyError as exc:
        if Path(path).exists():
            raise
        raise DataKeyError(f"{path}: no data key file; the accounts in PostgreSQL are sealed "
                           f"under data key {recorded}: copy the data key file of the other "
                           f"nodes here (mode 0600)") from exc
    if not key.holds(recorded):
        raise DataKeyError(f"{path} does not hold data key {recorded}, which seals the "
                           f"accounts in PostgreSQL: copy the data key file of the other "
                           f"nodes here")
    return key


class PostgresAccountStore(AccountsBase):
    """The console's accounts in the PostgreSQL store at `url` (see the module docstring)."""

    TABLES: ClassVar[dict[str, str]] = {
        "accounts": "console_accounts", "owner_codes": "console_owner_codes",
        "sessions": "console_sessions"}
    PLACEHOLDER: ClassVar[str] = "%s"
    _integrity_error: ClassVar[type[Exception]] = psycopg.errors.UniqueViolation

    def __init__(self, url: str, conn: psycopg.Connection[Any], key: DataKey, *,
                 now_us: Callable[[], int]) -> None:
        super().__init__(key, now_us=now_us)
        self.url = url
        self._conn: psycopg.Connection[Any] | None = conn
        self._lock = threading.RLock()
        self._in_tx = False

    @classmethod
    def open(cls, url: str, key: Path, *, now_us: Callable[[], int]) -> PostgresAccountStore:
        """Connect, apply the console's migrations and bind the data key file at `key`.

        Raises:
            AccountsUnavailable: PostgreSQL cannot be reached.
            DataKeyError: as `bind_key`.
        """
        conn = connect(url)
        try:
            pgschema.migrate(conn)
            data_key = bind_key(conn, Path(key))
        except psycopg.Error as exc:  # lost, or refused (e.g. no right to create tables)
            conn.close()
            raise AccountsUnavailable(f"PostgreSQL: {_first_line(exc)}") from None
        except BaseException:
            conn.close()
            raise
        return cls(url, conn, data_key, now_us=now_us)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- the engine seam ----------------------------------------------------------------

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        return self._call(sql, lambda conn: conn.execute(sql, params).fetchone())

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._call(sql, lambda conn: conn.execute(sql, params).fetchall())

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        return self._call(sql, lambda conn: conn.execute(sql, params).rowcount)

    def _many(self, sql: str, params: Iterable[tuple[Any, ...]]) -> None:
        def many(conn: psycopg.Connection[Any]) -> None:
            with conn.cursor() as cur:
                cur.executemany(sql, params)
        self._call(sql, many)

    @contextmanager
    def _tx(self) -> Iterator[None]:
        with self._lock:
            assert not self._in_tx, "account store transactions do not nest"
            conn = self._live()
            self._in_tx = True
            try:
                with conn.transaction():
                    yield
            except psycopg.OperationalError as exc:
                raise self._lost(conn, exc) from None
            finally:
                self._in_tx = False

    def _after_erase(self) -> None:
        # Deleted tuples stay in the table files until vacuumed; FULL rewrites the tables
        # without them now (the tables are small: a person's rows, not devices' data).
        self._call("VACUUM", lambda conn: conn.execute(
            "VACUUM (FULL) console_accounts, console_owner_codes, console_sessions"))

    def _rotated(self, new: DataKey) -> None:
        self._run("UPDATE console_data_key SET key_id = %s",
                  (bytes.fromhex(new.current_id),))

    # -- the connection ---------------------------------------------------------------------

    def _call(self, sql: str, work: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        with self._lock:
            if self._in_tx:  # the transaction owns failures (no retry inside it)
                assert self._conn is not None
                return work(self._conn)
            retry = sql.lstrip().upper().startswith("SELECT")
            while True:
                conn = self._live()
                try:
                    return work(conn)
                except psycopg.OperationalError as exc:
                    lost = self._lost(conn, exc)
                    if not (retry and conn.closed):
                        raise lost from None
                    retry = False

    def _live(self) -> psycopg.Connection[Any]:
        if self._conn is None or ended_by_server(self._conn):
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            self._conn = connect(self.url)
        return self._conn

    def _lost(self, conn: psycopg.Connection[Any], exc: Exception) -> AccountsUnavailable:
        """The error for a failed statement; a broken connection is dropped (next call
        reconnects)."""
        if conn.broken or conn.closed:
            conn.close()
            if self._conn is conn:
                self._conn = None
        return AccountsUnavailable(f"accounts in PostgreSQL: {_first_line(exc)}")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
