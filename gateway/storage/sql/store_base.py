"""`SQLStore`: the `Store` methods both engines' stores share, written once.

A subclass (SQLiteStore, PostgresStore) builds its write side (`_side`, an engine's
`WriteSide`) and the group-commit writer around it (`make_writer`), and says how a read
runs (`_read`: a function of a `Dialect` and arguments, in a worker thread). Everything
else a caller of the `Store` contract (gateway/storage/interface.py) sees is here: which
operation each write queues, in which network's queue, and whether it waits for its
commit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import trio

from gateway.model.declarations import ModelDecl
from gateway.model.limits import DEFAULT_LIMITS, Limits
from gateway.model.tree import DeviceNode, NetworkTree, ReportRow, StateKind

from ..audit import AuditEntry, AuditRecord
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
from ..writer import QueueLimits, Ticket, Writer
from . import audit_ops, queries
from .data_ops import (
    Control,
    Declare,
    Erase,
    MarkConnected,
    MarkDisconnected,
    Reports,
    ResetConnections,
    Seen,
    report_count,
)
from .session_ops import DeleteSession, Dequeue, Enqueue, SaveSession, SessionChanges, SetRetained
from .write_side import WriteSideBase

T = TypeVar("T")


def op_cost(op: Any) -> int:
    """What an operation costs the writer's fair queues: its readings, its changes, or 1."""
    if isinstance(op, Reports):
        return len(op.rows)
    if isinstance(op, SessionChanges):
        return len(op.changes)
    return 1


def make_writer(side: WriteSideBase, *, max_queue: int, max_batch: int, queue: QueueLimits
                ) -> Writer:
    """The group-commit writer applying batches with `side.apply_batch`."""
    return Writer(
        side.apply_batch, max_queue=max_queue, max_batch=max_batch,  # type: ignore[attr-defined]
        max_queued_cost=queue.max_queued_reports,
        max_queue_per_key=queue.max_queued_operations_per_network,
        max_cost_per_key=queue.max_queued_reports_per_network,
        cost=op_cost, count_rows=report_count)


class SQLStore:
    """The shared part of a `gateway.storage.Store` on SQL (see the module docstring)."""

    _side: WriteSideBase
    _writer: Writer

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(dialect, *args)` on a reader connection, in a worker thread.

        Raises StorageError (the read failed)."""
        raise NotImplementedError

    def _close_connections(self) -> None:
        """Close every connection (the writer has finished)."""
        raise NotImplementedError

    def _closing(self) -> None:
        """The store starts closing: what is queued is about to be committed."""

    async def _serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                     ) -> None:
        """Run the writer until it is closed (the open_* function's nursery)."""
        await self._writer.run(task_status=task_status)

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
        return await self._write(Declare(network, model, now, limits), network)

    async def submit_reports(self, rows: Sequence[ReportRow], network: UUID | None = None
                             ) -> Ticket:
        return await self.submit(Reports(tuple(rows)), network)

    async def append_reports(self, rows: Sequence[ReportRow], network: UUID | None = None
                             ) -> None:
        await self._write(Reports(tuple(rows)), network)

    async def stored_bytes(self, network: UUID) -> int:
        """The network's stored readings and commands in bytes (`network_usage`): what the
        writer last wrote if it touched the network since start (no I/O), else a read."""
        known = self._side.stored_bytes(network)
        if known is not None:
            return known
        return await self._read(queries.stored_bytes, network)

    async def append_control(self, value: UUID, data: str, now: datetime) -> StateRecord:
        return await self._write(Control(value, data, now))

    async def connected(self, network: UUID, client_id: str, cert_serial: str | None,
                        now: datetime) -> None:
        """Queued, not waited for: a connect never waits for a commit. The network's own
        queue keeps it ahead of that network's later writes (its disconnect, an erasure)."""
        await self.submit(MarkConnected(network, client_id, cert_serial, now), network)

    async def disconnected(self, network: UUID, client_id: str, reason: str,
                           now: datetime) -> None:
        """Queued, not waited for (see `connected`)."""
        await self.submit(MarkDisconnected(network, client_id, reason, now), network)

    async def seen(self, network: UUID, now: datetime) -> None:
        """Record activity; not waited for (last_seen is advisory)."""
        await self.submit(Seen(network, now), network)

    async def reset_connections(self, now: datetime, reason: str = "GATEWAY_RESTART") -> int:
        return await self._write(ResetConnections(reason, now))

    async def set_retained(self, network: UUID, topic: str, payload: bytes, qos: int,
                           now: datetime) -> None:
        await self._write(SetRetained(network, topic, bytes(payload), int(qos), now), network)

    async def save_session(self, network: UUID, client_id: str,
                           subscriptions: Sequence[tuple[str, int]], now: datetime) -> None:
        subs = tuple((f, int(q)) for f, q in subscriptions)
        await self._write(SaveSession(network, client_id, subs, now), network)

    async def delete_session(self, network: UUID, client_id: str) -> None:
        await self._write(DeleteSession(network, client_id), network)

    async def enqueue(self, network: UUID, client_id: str,
                      messages: Sequence[tuple[str, bytes, int, bool]], now: datetime
                      ) -> list[int]:
        msgs = tuple((t, bytes(p), int(q), bool(r)) for t, p, q, r in messages)
        return await self._write(Enqueue(network, client_id, msgs, now), network)

    async def dequeue(self, network: UUID, client_id: str, ids: Sequence[int]) -> None:
        await self._write(Dequeue(network, client_id, tuple(ids)), network)

    async def submit_session_changes(self, changes: Sequence[SessionChange], now: datetime
                                     ) -> Ticket:
        """Queue the broker's MQTT state changes as one operation (see `Store`)."""
        return await self.submit(SessionChanges(tuple(changes), now))

    async def erase_network(self, network: UUID, audit: AuditRecord | None = None) -> bool:
        """Delete every row of `network` in one transaction, appending `audit` to the audit
        trail in it; False (nothing recorded) if the network was unknown."""
        return await self._write(Erase(network, audit), network)

    async def append_audit(self, record: AuditRecord, network: UUID | None = None) -> int:
        """Append `record` to the audit trail (in `network`'s queue, behind its earlier
        writes); return the last entry's seq once committed."""
        return await self._write(audit_ops.AppendAudit(record), network)

    async def audit_entries(self, *, since: datetime | None = None, after: int = 0,
                            limit: int = 100) -> list[AuditEntry]:
        """Up to `limit` audit entries after seq `after` (from `since` on), oldest first."""
        return await self._read(lambda db: list(audit_ops.entries(db, since, limit, after)))

    async def audit_newest(self, *, before: int | None = None, limit: int = 100
                           ) -> list[AuditEntry]:
        """Up to `limit` audit entries with seq below `before` (None: the newest), newest
        first (the console's pages)."""
        return await self._read(audit_ops.newest, before, limit)

    # -- reads --------------------------------------------------------------------------
    async def get_tree(self, network: UUID) -> NetworkTree | None:
        return await self._read(queries.tree, network)

    async def find_value(self, value: UUID) -> ValueLocation | None:
        return await self._read(queries.find_value, value)

    async def find_device(self, device: UUID) -> tuple[UUID, DeviceNode] | None:
        return await self._read(queries.find_device, device)

    async def history(self, value: UUID, *, kind: StateKind = StateKind.REPORT,
                      since: datetime | None = None, until: datetime | None = None,
                      limit: int = 100, newest_first: bool = False,
                      after: StateRecord | None = None) -> list[StateRecord]:
        return await self._read(queries.history, value, kind, since, until, limit,
                                newest_first, after)

    async def latest_states(self, network: UUID) -> dict[UUID, StateRecord]:
        return await self._read(queries.latest_states, network)

    async def connection_status(self, network: UUID) -> ConnectionStatus | None:
        return await self._read(queries.connection_status, network)

    async def list_networks(self, *, limit: int = 100, after: UUID | None = None
                            ) -> list[ConnectionStatus]:
        return await self._read(queries.list_networks, limit, after)

    async def connection_history(self, network: UUID, *, limit: int = 100
                                 ) -> list[ConnectionEvent]:
        return await self._read(queries.connection_history, network, limit)

    async def retained(self, network: UUID) -> list[RetainedMessage]:
        return await self._read(queries.retained, network)

    async def load_sessions(self, network: UUID | None = None, *, queued: bool = True
                            ) -> list[StoredSession]:
        return await self._read(queries.sessions, network, queued)

    async def load_queued(self, network: UUID, client_id: str, upto: int
                          ) -> list[QueuedMessage]:
        return await self._read(queries.queued, network, client_id, upto)

    def statistics(self) -> StoreStatistics:
        w = self._writer
        q = w.statistics()
        return StoreStatistics(
            queued=q.queued, queue_capacity=w._capacity, producers_waiting=q.producers_waiting,
            commits=w.commits, operations=w.operations, reports=w.rows,
            failed_operations=w.failed, busy_retries=self._side.busy_retries,
            last_batch=w.last_batch, last_commit_seconds=w.last_commit_seconds,
            queued_reports=q.queued_cost, queued_networks=q.keys,
            waits_network_full=q.waits_key_full, waits_total_full=q.waits_total_full,
            largest_queues=q.largest, commit_latency=w.commit_latency)


@asynccontextmanager
async def running(store: SQLStore, *, reset_connections: bool,
                  beside: Callable[[], Awaitable[None]] | None = None
                  ) -> AsyncIterator[None]:
    """Run `store`'s writer (and `beside`, a task that runs until cancelled) while the body
    runs. On exit everything queued is committed (as far as the engine can) before the
    connections close. With `reset_connections`, networks left online by a previous process
    are marked offline first (reason GATEWAY_RESTART)."""
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store._serve)
            if beside is not None:
                nursery.start_soon(beside)
            try:
                if reset_connections:
                    await store.reset_connections(datetime.now(UTC))
                yield
            finally:
                store._closing()
                with trio.CancelScope(shield=True):
                    await store._writer.close()
                nursery.cancel_scope.cancel()  # `beside`; the writer has finished
    except BaseExceptionGroup as group:
        # The writer never raises, so a group here wraps the caller's own exception only:
        # hand it back as it was raised, not wrapped by our private nursery.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        store._close_connections()
