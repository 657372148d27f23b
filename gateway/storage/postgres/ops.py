"""The write side on PostgreSQL: operations the single writer applies, many per transaction.

The operations are the shared ones (gateway/storage/sql/: data_ops, session_ops,
audit_ops), as in the SQLite store: `WriteSide.apply_batch` runs a batch in ONE transaction
and returns one outcome per operation (its result, or `Failed`); an operation that finds bad
input fails alone before touching SQL; if SQL fails, the transaction is rolled back and the
batch is retried one operation per transaction. Report rows of the batch are written
together when the batch needs them (before any other operation, and at the end): the rows
without a device timestamp by one binary COPY, the device-stamped ones by one
`INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING` (a resend is stored once:
schema.py).

Losing the server. When the connection breaks (server restarted, connection terminated,
network down), the batch on it fails as a whole (`StorageError`: none of its operations is
acknowledged; a COMMIT whose answer was lost counts as failed, and a resend is harmless).
The next batch reconnects first; while the server stays away, each batch waits for the next
try of a capped exponential backoff and fails if that try fails, so producers see errors at
the backoff's pace, not in a busy loop, and writing resumes with the first batch after the
server is back.

Runs only in the writer's worker thread; caches (uuid -> id, partitions known) are that
thread's and are dropped on any rollback or reconnect (gateway/storage/sql/write_side.py).
"""

from __future__ import annotations

import hashlib
import select
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ..errors import StorageError, StoreUnavailable
from ..sql.write_side import ROW_OVERHEAD, WriteSideBase
from ..writer import Failed
from .dialect import PostgresDialect
from .schema import create_week, existing_weeks, in_window, partition_name, week_of

BACKOFF_FIRST = 0.1  # seconds before the first reconnect try after a loss
BACKOFF_MAX = 5.0  # ... doubling up to this


# TCP keepalives unless the URL sets its own: a server that vanished without closing the
# connection (host down, network cut) is noticed in about half a minute, not hours, so the
# batch waiting on it fails and the writer reconnects.
KEEPALIVES = {"keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5",
              "keepalives_count": "3"}


def connect(url: str, *, connect_timeout: float = 5.0, autocommit: bool = False
            ) -> psycopg.Connection:
    """A connection to `url`; raises StoreUnavailable with libpq's reason."""
    try:
        given = conninfo_to_dict(url)
        options = {k: v for k, v in KEEPALIVES.items() if k not in given}
        if "connect_timeout" not in given:
            options["connect_timeout"] = str(max(1, round(connect_timeout)))
        return psycopg.connect(url, autocommit=autocommit, **options)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreUnavailable(f"cannot reach PostgreSQL: {reason}") from None


def dedup_digest(data: str) -> bytes:
    return hashlib.blake2b(data.encode(), digest_size=16).digest()


def ended_by_server(conn: psycopg.Connection) -> bool:
    """Whether the server ended this idle connection (a restart, a failover,
    `pg_terminate_backend`): its backend sent a FATAL notice and closed, so the socket is
    readable though nothing was asked (for a connection that does not LISTEN). Found without
    a round trip, so the work about to run goes to a new connection instead of failing on
    the old one."""
    if conn.closed or conn.broken:
        return True
    try:
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


class WriteSide(WriteSideBase):
    """The write connection, its reconnection, its caches, and PostgreSQL's batches."""

    dialect = PostgresDialect

    def __init__(self, connect: Callable[[], psycopg.Connection],
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__()
        self._connect = connect
        self._clock, self._sleep = clock, sleep
        self.weeks: set[int] | None = None  # weeks with a partition (None: read them)
        self.pending_stamped: list[tuple[int, int, int, str]] = []
        self.now_us = 0  # the batch's wall clock, for the partition window
        self.reconnects = 0  # connections made after the first
        self.lost = 0  # batches failed because the server was lost
        self.closing = False  # set by the store's close: no more backoff waits
        self._backoff = 0.0
        self._next_try = 0.0

    # -- the connection ---------------------------------------------------------------
    def open(self) -> None:
        """Connect now (the store's open); raises StoreUnavailable."""
        self.conn = self._connect()

    def _connection(self) -> psycopg.Connection:
        conn = self.conn
        if conn is not None and not ended_by_server(conn):
            return conn
        if conn is not None:
            conn.close()  # a failover or restart while idle: no batch fails for it
        self.conn = None
        wait = self._next_try - self._clock()
        if wait > 0:
            if self.closing:  # shutting down: fail what is left rather than wait for it
                raise StoreUnavailable("PostgreSQL is unavailable (the store is closing)")
            self._sleep(wait)
        try:
            self.conn = self._connect()
        except StorageError as exc:
            self._backoff = min(BACKOFF_MAX, max(BACKOFF_FIRST, self._backoff * 2))
            self._next_try = self._clock() + self._backoff
            raise StoreUnavailable(str(exc)) from None
        self._backoff = 0.0
        self.reconnects += 1
        return self.conn

    def _broken(self) -> bool:
        return self.conn is None or self.conn.closed or self.conn.broken

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def reset_caches(self) -> None:
        super().reset_caches()
        self.weeks = None

    def forget_partitions_and_usage(self) -> None:
        """After retention ran beside the writer: read the partitions and the networks'
        stored bytes again (each a single attribute store or dict clear, whole under the
        GIL, so safe from the event loop while the writer's thread works)."""
        self.weeks = None
        self.usage.clear()

    # -- hooks of the shared operations ----------------------------------------------
    def lock_network(self, network_id: int) -> None:
        # Two nodes declaring the same network at once would each see the other's new rows
        # only after commit: one declaration per network at a time.
        self.conn.execute("SELECT id FROM networks WHERE id = %s FOR UPDATE", (network_id,))

    def prepare_reading(self, state_id: int, ts_us: int) -> None:
        self.lock_states({state_id})
        self.ensure_partitions([ts_us])

    def lock_network_states(self, network_id: int) -> None:
        # Wait for every other writer's batch holding these states (`lock_states`): the
        # deletes then see their readings. (READ COMMITTED: each statement reads what is
        # committed when it starts.)
        self.conn.execute("SELECT id FROM states WHERE network_id = %s ORDER BY id "
                          "FOR UPDATE", (network_id,))

    def add_usage(self, per_network: dict[int, int]) -> None:
        """Add bytes to networks' usage rows (in the current transaction)."""
        items = sorted(per_network.items())  # one lock order across nodes
        for nid, total in self.conn.execute(
                "INSERT INTO network_usage (network_id, stored_bytes) "
                "SELECT * FROM unnest(%s::int8[], %s::int8[]) "
                "ON CONFLICT (network_id) DO UPDATE SET "
                "stored_bytes = network_usage.stored_bytes + excluded.stored_bytes "
                "RETURNING network_id, stored_bytes",
                ([n for n, _ in items], [b for _, b in items])):
            self.usage[nid] = total

    def ensure_partitions(self, ts_values: Sequence[int]) -> str | None:
        """Create the week partitions these reading times need (within the window); return
        the one partition that holds them all, if there is one (None otherwise)."""
        if self.weeks is None:
            self.weeks = existing_weeks(self.conn)
        weeks = self.weeks
        first, last = week_of(min(ts_values)), week_of(max(ts_values))
        if first == last:  # the usual batch: readings of one week
            if first in weeks and first + 1 in weeks:
                return partition_name(first)
            needed = {first}
        else:
            needed = {week_of(ts) for ts in set(ts_values)}
        missing = {w for w in needed if w not in weeks}
        ahead = week_of(self.now_us) + 1  # next week's, before its first reading needs it
        if ahead not in weeks:
            missing.add(ahead)
        for week in sorted(missing):
            if in_window(week, self.now_us):
                create_week(self.conn, week)
                weeks.add(week)
        return partition_name(first) if first == last and first in weeks else None

    def lock_states(self, state_ids: set[int]) -> None:
        """Hold `state_ids` (KEY SHARE) until the commit: an erasure waits for this batch,
        or ran before it and they are gone (then the batch fails, to be retried one
        operation at a time, with the caches dropped: its rows of an erased network fail
        as UnknownValue). What a foreign key would do, once per state instead of per row."""
        ids = sorted(state_ids)
        found = self.conn.execute("SELECT count(*) FROM (SELECT id FROM states "
                                  "WHERE id = ANY(%s) ORDER BY id FOR KEY SHARE) s",
                                  (ids,)).fetchone()[0]
        if found != len(ids):
            raise StorageError("a state of this batch was erased meanwhile")

    # -- batches ----------------------------------------------------------------------
    def flush_rows(self) -> None:
        rows, stamped = self.pending_rows, self.pending_stamped
        if not rows and not stamped:
            return
        self.lock_states({r[0] for r in rows} | {r[0] for r in stamped})
        week = self.ensure_partitions([r[1] for r in rows] + [r[1] for r in stamped])
        usage: dict[int, int] = {}
        networks = self.state_networks
        if rows:
            # Straight into the week's partition when it holds every row (the usual batch):
            # PostgreSQL then routes no row.
            with self.conn.cursor() as cur, cur.copy(
                    f"COPY {week or 'state_log'} (state_id, ts_us, received_us, data) "
                    "FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "int8", "int8", "text"])
                for row in rows:
                    copy.write_row(row)
            for sid, size in self.pending_bytes.items():
                nid = networks[sid]
                usage[nid] = usage.get(nid, 0) + size
            rows.clear()
            self.pending_bytes.clear()
        if stamped:
            columns = list(zip(*stamped, strict=True))
            digests = [dedup_digest(d) for d in columns[3]]
            went_in = self.conn.execute(
                "INSERT INTO state_log (state_id, ts_us, received_us, data, dedup) "
                "SELECT * FROM unnest(%s::int8[], %s::int8[], %s::int8[], %s::text[], "
                "%s::bytea[]) ON CONFLICT DO NOTHING RETURNING state_id, octet_length(data)",
                (list(columns[0]), list(columns[1]), list(columns[2]), list(columns[3]),
                 digests)).fetchall()
            for sid, size in went_in:
                nid = networks[sid]
                usage[nid] = usage.get(nid, 0) + size + ROW_OVERHEAD
            stamped.clear()
        if usage:
            self.add_usage(usage)

    def _apply(self, op: Any) -> Any:
        rows_for = getattr(op, "rows_for", None)  # sql.data_ops.Reports
        if rows_for is not None:
            try:
                rows = rows_for(self)
            except StorageError as exc:
                return Failed(exc)
            plain, sizes = self.pending_rows, self.pending_bytes
            for row in rows:
                if row[1] == row[2]:  # no device timestamp: every receipt is a reading
                    data = row[3]
                    plain.append(row)
                    sizes[row[0]] = sizes.get(row[0], 0) + ROW_OVERHEAD + (
                        len(data) if data.isascii() else len(data.encode()))
                else:
                    self.pending_stamped.append(row)
            return None
        return self.apply_one(op)

    def apply_batch(self, ops: Sequence[Any]) -> list[Any]:
        """Apply `ops` in one transaction; one outcome per operation.

        Raises:
            StorageError: the server is unavailable or was lost during the batch (the whole
                batch failed; the writer fails every ticket of it).
        """
        conn = self._connection()
        self.now_us = time.time_ns() // 1000
        try:
            outcomes = [self._apply(op) for op in ops]
            self.flush_rows()
            conn.commit()
            return outcomes
        except BaseException as exc:
            self._rollback()
            if self._broken():
                self.lost += 1
                self._next_try = self._clock() + BACKOFF_FIRST
                raise StoreUnavailable(f"PostgreSQL connection lost: {exc}") from None
            if not isinstance(exc, Exception):
                raise
        return [self._apply_alone(op) for op in ops]  # SQL failed: isolate the culprit

    def _apply_alone(self, op: Any) -> Any:
        try:
            conn = self._connection()
            outcome = self._apply(op)
            self.flush_rows()
            conn.commit()
            return outcome
        except Exception as exc:  # this operation alone fails, never the writer
            self._rollback()
            if isinstance(exc, StoreUnavailable):
                return Failed(exc)
            return Failed(StorageError(f"{type(op).__name__} failed: {exc!r}"))

    def _rollback(self) -> None:
        self.pending_rows.clear()
        self.pending_stamped.clear()
        self.pending_bytes.clear()
        self.reset_caches()
        conn = self.conn
        if conn is None or conn.closed:
            return
        try:
            conn.rollback()
        except psycopg.Error:
            pass  # broken: `_broken()` says so, the next batch reconnects
        if conn.broken:
            conn.close()
