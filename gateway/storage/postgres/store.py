"""`PostgresStore`: the store for several gateway processes or machines, on PostgreSQL.

Open it with `open_postgres_store(url)`. psycopg 3 is synchronous or asyncio, and the gateway
is trio, so every call runs in a worker thread (`trio.to_thread.run_sync`), on:
- ONE writer connection, driven by the shared group-commit `Writer` (gateway/storage/
  writer.py: fair per-network queues, backpressure, acknowledgement only after COMMIT), so
  fairness and backpressure stay one implementation for both stores;
- a small pool of reader connections (`readers`, default 3) for the HTTP API and cache
  fills, each read one REPEATABLE READ snapshot: reads never wait for the writer and see
  only committed data.
(An asyncio pool would need an asyncio loop beside trio; threads are what the SQLite store
does already, and each call is one round trip or one batch, so the thread hop is cheap.)

Durability is PostgreSQL's: a COMMIT returns once the WAL is flushed (`synchronous_commit
= on`, the server default; docs/operations.md says what the other settings give up).

The server lost while running: the batch in flight fails (StorageError: nothing of it is
acknowledged), later batches reconnect with a capped backoff (ops.py), reads reconnect
their connection on next use; writing resumes once the server answers again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import psycopg
import trio

from ..errors import StorageError
from ..sql.store_base import SQLStore, make_writer, running
from ..writer import DEFAULT_QUEUE_LIMITS, QueueLimits
from .dialect import PostgresDialect
from .ops import StoreUnavailable, WriteSide, connect
from .retention import drop_before
from .schema import create_week, migrate, week_of

T = TypeVar("T")


class ReaderPool:
    """Up to `size` reader connections, made on first use and remade after a loss."""

    def __init__(self, connect: Callable[[], psycopg.Connection], size: int) -> None:
        self._connect = connect
        self._idle: list[psycopg.Connection] = []
        self._all: list[psycopg.Connection] = []  # every open one, to close at the end
        self._lock = threading.Lock()
        self._limiter = trio.CapacityLimiter(size)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._limiter:
            conn = self._idle.pop() if self._idle else None
            box: list[psycopg.Connection | None] = [conn]
            try:
                return await trio.to_thread.run_sync(self._call, box, fn, args)
            finally:
                if box[0] is not None:
                    self._idle.append(box[0])

    def _call(self, box: list, fn: Callable[..., T], args: tuple) -> T:
        # A connection that went stale while idle (server restarted, connection ended) is
        # found out by its next query: a read is safe to repeat, so it is, once, on a fresh
        # connection.
        for attempt in (1, 2):
            conn = box[0]
            if conn is None or conn.closed or conn.broken:
                box[0] = None
                conn = self._connect()  # StoreUnavailable
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                conn.read_only = True
                with self._lock:
                    self._all = [c for c in self._all if not c.closed] + [conn]
                box[0] = conn
            try:
                result = fn(PostgresDialect(conn), *args)
                conn.commit()
                return result
            except psycopg.Error as exc:
                try:
                    conn.rollback()
                except psycopg.Error:
                    pass
                if not (conn.broken or conn.closed):
                    raise StorageError(f"read failed: {exc}") from exc
                conn.close()
                box[0] = None
                if attempt == 2:
                    raise StoreUnavailable(f"PostgreSQL connection lost: {exc}") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            every, self._all = self._all, []
        for conn in every:
            conn.close()


class PostgresStore(SQLStore):
    """A `gateway.storage.Store` on one PostgreSQL database. Build it with
    `open_postgres_store`. `max_batch`, `max_queue` and `queue` as for `SQLiteStore`."""

    def __init__(self, url: str, *, max_queue: int = 10_000, max_batch: int = 2_000,
                 queue: QueueLimits = DEFAULT_QUEUE_LIMITS, readers: int = 3,
                 connect_timeout: float = 5.0) -> None:
        self.url = url
        self._side = WriteSide(partial(connect, url, connect_timeout=connect_timeout))
        self._side.open()  # StoreUnavailable: the caller says so and exits
        try:
            self.schema_version = migrate(self._side.conn)
            with self._side.conn.transaction():  # this week's and next week's partitions
                this_week = week_of(time.time_ns() // 1000)
                for week in (this_week, this_week + 1):
                    create_week(self._side.conn, week)
        except psycopg.Error as exc:
            self._side.close()
            raise StorageError(f"cannot set up the schema: {exc}") from None
        except BaseException:
            self._side.close()
            raise
        self._readers = ReaderPool(
            partial(connect, url, connect_timeout=connect_timeout), max(1, readers))
        self._writer = make_writer(self._side, max_queue=max_queue, max_batch=max_batch,
                                   queue=queue)

    @property
    def reconnects(self) -> int:
        """Writer connections made after a loss of the server."""
        return self._side.reconnects

    # -- lifecycle ----------------------------------------------------------------------
    def _closing(self) -> None:
        self._side.closing = True  # no more reconnection waits: fail what cannot commit

    def _close_connections(self) -> None:
        self._side.close()
        self._readers.close()

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._readers.run(fn, *args)

    # -- retention ----------------------------------------------------------------------
    async def drop_reports_before(self, cutoff: datetime) -> int:
        """Retention: drop every week partition wholly older than `cutoff` (and delete
        older readings of the out-of-window partition), keeping `stored_bytes` right.
        Returns the readings removed. On a connection of its own, beside the writer
        (`retention`); then this node reads the networks' stored bytes afresh.

        Raises:
            StoreUnavailable: PostgreSQL cannot be reached.
            StorageError: PostgreSQL refused a statement.
        """
        def run() -> int:
            with connect(self.url, autocommit=True) as conn:
                try:
                    return drop_before(conn, cutoff)
                except psycopg.OperationalError as exc:
                    raise StoreUnavailable(f"PostgreSQL connection lost: {exc}") from None
                except psycopg.Error as exc:
                    raise StorageError(f"retention failed: {exc}") from None

        removed = await trio.to_thread.run_sync(run)
        self._side.forget_partitions_and_usage()
        return removed


@asynccontextmanager
async def open_postgres_store(
    url: str, *, max_queue: int = 10_000, max_batch: int = 2_000,
    reset_connections: bool = True, queue: QueueLimits = DEFAULT_QUEUE_LIMITS,
    readers: int = 3, connect_timeout: float = 5.0,
) -> AsyncIterator[PostgresStore]:
    """Connect to `url`, create or migrate the schema, and run the writer.

    On exit, everything queued is committed (if the server is there) before the connections
    close. With `reset_connections`, networks left online by a previous process are marked
    offline (reason GATEWAY_RESTART): right for one gateway on the database.

    Raises:
        StoreUnavailable: the server cannot be reached (a StorageError).
        SchemaError: the database is from a newer fleetgate.
    """
    store = await trio.to_thread.run_sync(
        lambda: PostgresStore(url, max_queue=max_queue, max_batch=max_batch, queue=queue,
                              readers=readers, connect_timeout=connect_timeout))
    async with running(store, reset_connections=reset_connections):
        yield store


__all__ = ["PostgresStore", "ReaderPool", "open_postgres_store"]
