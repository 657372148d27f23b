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
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar
from uuid import UUID

import psycopg
import trio

from gateway.model.declarations import ModelDecl
from gateway.model.limits import DEFAULT_LIMITS, Limits
from gateway.model.tree import DeviceNode, NetworkTree, ReportRow, StateKind

from ..audit import AuditEntry, AuditRecord
from ..errors import StorageError
from ..records import (
    ConnectionEvent,
    ConnectionStatus,
    QueuedMessage,
    RetainedMessage,
    SessionChange,
    StateRecord,
    StoredSession,
    StoreStatistics,
    ValueLocation,
)
from ..writer import DEFAULT_QUEUE_LIMITS, QueueLimits, Ticket, Writer
from . import audit_ops, data_ops, queries, session_ops
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
                result = fn(conn, *args)
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


class PostgresStore:
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
        self._writer = Writer(
            self._side.apply_batch, max_queue=max_queue, max_batch=max_batch,
            max_queued_cost=queue.max_queued_reports,
            max_queue_per_key=queue.max_queued_operations_per_network,
            max_cost_per_key=queue.max_queued_reports_per_network,
            cost=_op_cost, count_rows=data_ops.report_count)

    @property
    def reconnects(self) -> int:
        """Writer connections made after a loss of the server."""
        return self._side.reconnects

    # -- lifecycle ----------------------------------------------------------------------
    async def _serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                     ) -> None:
        await self._writer.run(task_status=task_status)

    def _close_connections(self) -> None:
        self._side.close()
        self._readers.close()

    # -- write plumbing -----------------------------------------------------------------
    async def submit(self, op: Any, network: UUID | None = None) -> Ticket:
        """Queue one write operation in `network`'s queue (None: the shared one); waits
        while that queue is full (backpressure for that network only)."""
        return await self._writer.submit(op, network)

    async def wait_committed(self, ticket: Ticket) -> Any:
        """Return (the operation's result) once its transaction committed; raise if it failed."""
        return await self._writer.wait(ticket)

    async def _write(self, op: Any, network: UUID | None = None) -> Any:
        return await self._writer.wait(await self._writer.submit(op, network))

    # -- writes -------------------------------------------------------------------------
    async def declare_model(self, network: UUID, model: ModelDecl, now: datetime,
                            limits: Limits = DEFAULT_LIMITS) -> NetworkTree:
        return await self._write(data_ops.Declare(network, model, now, limits), network)

    async def submit_reports(self, rows: Sequence[ReportRow], network: UUID | None = None
                             ) -> Ticket:
        return await self.submit(data_ops.Reports(tuple(rows)), network)

    async def append_reports(self, rows: Sequence[ReportRow], network: UUID | None = None
                             ) -> None:
        await self._write(data_ops.Reports(tuple(rows)), network)

    async def stored_bytes(self, network: UUID) -> int:
        """What this writer last wrote for the network if it touched it since start (no
        I/O), else a read of its `network_usage` row."""
        known = self._side.stored_bytes(network)
        if known is not None:
            return known
        return await self._readers.run(queries.stored_bytes, network)

    async def append_control(self, value: UUID, data: str, now: datetime) -> StateRecord:
        return await self._write(data_ops.Control(value, data, now))

    async def connected(self, network: UUID, client_id: str, cert_serial: str | None,
                        now: datetime) -> None:
        """Queued, not waited for (see `SQLiteStore.connected`)."""
        await self.submit(data_ops.MarkConnected(network, client_id, cert_serial, now),
                          network)

    async def disconnected(self, network: UUID, client_id: str, reason: str,
                           now: datetime) -> None:
        await self.submit(data_ops.MarkDisconnected(network, client_id, reason, now), network)

    async def seen(self, network: UUID, now: datetime) -> None:
        await self.submit(data_ops.Seen(network, now), network)

    async def reset_connections(self, now: datetime, reason: str = "GATEWAY_RESTART") -> int:
        return await self._write(data_ops.ResetConnections(reason, now))

    async def set_retained(self, network: UUID, topic: str, payload: bytes, qos: int,
                           now: datetime) -> None:
        await self._write(session_ops.SetRetained(network, topic, bytes(payload), int(qos),
                                                  now), network)

    async def save_session(self, network: UUID, client_id: str,
                           subscriptions: Sequence[tuple[str, int]], now: datetime) -> None:
        subs = tuple((f, int(q)) for f, q in subscriptions)
        await self._write(session_ops.SaveSession(network, client_id, subs, now), network)

    async def delete_session(self, network: UUID, client_id: str) -> None:
        await self._write(session_ops.DeleteSession(network, client_id), network)

    async def enqueue(self, network: UUID, client_id: str,
                      messages: Sequence[tuple[str, bytes, int, bool]], now: datetime
                      ) -> list[int]:
        msgs = tuple((t, bytes(p), int(q), bool(r)) for t, p, q, r in messages)
        return await self._write(session_ops.Enqueue(network, client_id, msgs, now), network)

    async def dequeue(self, network: UUID, client_id: str, ids: Sequence[int]) -> None:
        await self._write(session_ops.Dequeue(network, client_id, tuple(ids)), network)

    async def submit_session_changes(self, changes: Sequence[SessionChange], now: datetime
                                     ) -> Ticket:
        return await self.submit(session_ops.SessionChanges(tuple(changes), now))

    async def erase_network(self, network: UUID, audit: AuditRecord | None = None) -> bool:
        return await self._write(data_ops.Erase(network, audit), network)

    async def append_audit(self, record: AuditRecord, network: UUID | None = None) -> int:
        return await self._write(audit_ops.AppendAudit(record), network)

    async def audit_entries(self, *, since: datetime | None = None, after: int = 0,
                            limit: int = 100) -> list[AuditEntry]:
        return await self._readers.run(
            lambda conn: list(audit_ops.entries(conn, since, limit, after)))

    async def audit_newest(self, *, before: int | None = None, limit: int = 100
                           ) -> list[AuditEntry]:
        return await self._readers.run(audit_ops.newest, before, limit)

    async def drop_reports_before(self, cutoff: datetime) -> int:
        """Retention: drop every week partition wholly older than `cutoff` (and delete
        older readings of the out-of-window partition), keeping `stored_bytes` right.
        Returns the readings removed. Runs through the writer, like any write."""
        return await self._write(_DropBefore(cutoff))

    # -- reads --------------------------------------------------------------------------
    async def get_tree(self, network: UUID) -> NetworkTree | None:
        return await self._readers.run(queries.tree, network)

    async def find_value(self, value: UUID) -> ValueLocation | None:
        return await self._readers.run(queries.find_value, value)

    async def find_device(self, device: UUID) -> tuple[UUID, DeviceNode] | None:
        return await self._readers.run(queries.find_device, device)

    async def history(self, value: UUID, *, kind: StateKind = StateKind.REPORT,
                      since: datetime | None = None, until: datetime | None = None,
                      limit: int = 100, newest_first: bool = False,
                      after: StateRecord | None = None) -> list[StateRecord]:
        return await self._readers.run(queries.history, value, kind, since, until, limit,
                                       newest_first, after)

    async def latest_states(self, network: UUID) -> dict[UUID, StateRecord]:
        return await self._readers.run(queries.latest_states, network)

    async def connection_status(self, network: UUID) -> ConnectionStatus | None:
        return await self._readers.run(queries.connection_status, network)

    async def list_networks(self, *, limit: int = 100, after: UUID | None = None
                            ) -> list[ConnectionStatus]:
        return await self._readers.run(queries.list_networks, limit, after)

    async def connection_history(self, network: UUID, *, limit: int = 100
                                 ) -> list[ConnectionEvent]:
        return await self._readers.run(queries.connection_history, network, limit)

    async def retained(self, network: UUID) -> list[RetainedMessage]:
        return await self._readers.run(queries.retained, network)

    async def load_sessions(self, network: UUID | None = None, *, queued: bool = True
                            ) -> list[StoredSession]:
        return await self._readers.run(queries.sessions, network, queued)

    async def load_queued(self, network: UUID, client_id: str, upto: int
                          ) -> list[QueuedMessage]:
        return await self._readers.run(queries.queued, network, client_id, upto)

    def statistics(self) -> StoreStatistics:
        w = self._writer
        q = w.statistics()
        return StoreStatistics(
            queued=q.queued, queue_capacity=w._capacity, producers_waiting=q.producers_waiting,
            commits=w.commits, operations=w.operations, reports=w.rows,
            failed_operations=w.failed, busy_retries=0,
            last_batch=w.last_batch, last_commit_seconds=w.last_commit_seconds,
            queued_reports=q.queued_cost, queued_networks=q.keys,
            waits_network_full=q.waits_key_full, waits_total_full=q.waits_total_full,
            largest_queues=q.largest, commit_latency=w.commit_latency)


class _DropBefore:
    __slots__ = ("cutoff",)

    def __init__(self, cutoff: datetime) -> None:
        self.cutoff = cutoff

    def apply(self, side: WriteSide) -> int:
        return drop_before(side, self.cutoff)


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
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store._serve)
            try:
                if reset_connections:
                    await store.reset_connections(datetime.now(UTC))
                yield store
            finally:
                store._side.closing = True
                with trio.CancelScope(shield=True):
                    await store._writer.close()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        store._close_connections()


def _op_cost(op: Any) -> int:
    """What an operation costs the writer's fair queues: its readings, its changes, or 1."""
    if isinstance(op, data_ops.Reports):
        return len(op.rows)
    if isinstance(op, session_ops.SessionChanges):
        return len(op.changes)
    return 1


__all__ = ["PostgresStore", "ReaderPool", "open_postgres_store"]
