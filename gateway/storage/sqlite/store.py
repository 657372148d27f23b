"""`SQLiteStore`: the embedded default store, one file under the gateway's data folder.

One write connection, driven by the group-commit `Writer` (writes queue, commit in batches, in
a worker thread); one read connection for the HTTP API and cache fills (WAL: reads never wait
for the writer, and see only committed data). Open it with `open_sqlite_store(data_dir)`.

Durability: `synchronous=FULL` by default, i.e. one fsync of the WAL per transaction, so what
a commit acknowledged survives a power cut, not only a process crash. `synchronous="NORMAL"`
keeps crash safety (SIGKILL) and gives up only the last transactions on power loss.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

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
from . import audit_ops, ops, queries, session_ops
from .convert import to_us
from .lock import lock_folder
from .retention import DropHistoryStep
from .schema import configure_reader, configure_writer, migrate

DB_NAME = "fleetgate.sqlite3"
T = TypeVar("T")


def _create_private(path: Path) -> None:
    """Create the database file 0600 before SQLite does (it holds personal data)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)


class SQLiteStore:
    """A `gateway.storage.Store` on one SQLite file. Build it with `open_sqlite_store`.

    `max_batch` (readings, or other operations' cost, per transaction): 2,000 commit in
    10-20 ms on a shared 2-core machine, which bounds how long one network's flood holds
    another network's PUBACK (bench/writer_fairness.py: p50 17 ms vs 45 ms at 5,000), and the
    flood's own rate was the same at both."""

    def __init__(self, path: Path, *, synchronous: str = "FULL", max_queue: int = 10_000,
                 max_batch: int = 2_000, queue: QueueLimits = DEFAULT_QUEUE_LIMITS) -> None:
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        self.path = path
        try:
            _create_private(path)
        except OSError as exc:
            raise StorageError(f"cannot create {path}: {exc.strerror or exc}") from None
        try:
            wconn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            configure_writer(wconn, synchronous=synchronous)
            self.schema_version = migrate(wconn)
            rconn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            configure_reader(rconn)
            cconn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            cconn.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open {path}: {exc}") from exc
        self._side = ops.WriteSide(wconn)
        self._read = rconn
        self._checkpoint_conn = cconn
        self.checkpoints = 0  # background checkpoint rounds run
        self.checkpointed_commits = 0  # commits whose pages are all in the database file
        self._read_limiter = trio.CapacityLimiter(1)
        self._writer = Writer(
            self._side.apply_batch, max_queue=max_queue, max_batch=max_batch,
            max_queued_cost=queue.max_queued_reports,
            max_queue_per_key=queue.max_queued_operations_per_network,
            max_cost_per_key=queue.max_queued_reports_per_network,
            cost=_op_cost, count_rows=ops.report_count)

    # -- lifecycle ----------------------------------------------------------------------
    async def _serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                     ) -> None:
        await self._writer.run(task_status=task_status)

    async def _checkpointer(self, interval: float) -> None:
        """Copy the WAL into the database beside the writer (PASSIVE: never blocks it).

        SQLite releases the GIL while it copies, so this uses the second core, and the
        writer's commits stay short. Runs until cancelled.
        """
        while True:
            await trio.sleep(interval)
            upto = self._writer.commits
            if upto == self.checkpointed_commits:
                continue
            try:
                busy, log, copied = await trio.to_thread.run_sync(
                    lambda: self._checkpoint_conn.execute(
                        "PRAGMA wal_checkpoint(PASSIVE)").fetchone())
            except sqlite3.Error:
                continue  # I/O trouble: the writer's safety-net checkpoint takes over
            self.checkpoints += 1
            if not busy and copied == log:  # everything up to `upto` is in the database
                self.checkpointed_commits = upto

    def _close_connections(self) -> None:
        for conn in (self._side.conn, self._read, self._checkpoint_conn):
            conn.close()

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
        return await self._write(ops.Declare(network, model, now, limits), network)

    async def submit_reports(self, rows: Sequence[ReportRow], network: UUID | None = None
                             ) -> Ticket:
        return await self.submit(ops.Reports(tuple(rows)), network)

    async def append_reports(self, rows: Sequence[ReportRow], network: UUID | None = None
                             ) -> None:
        await self._write(ops.Reports(tuple(rows)), network)

    async def stored_bytes(self, network: UUID) -> int:
        """The network's stored readings and commands in bytes (`network_usage`): what the
        writer last wrote if it touched the network since start (no I/O), else a read."""
        known = self._side.stored_bytes(network)
        if known is not None:
            return known
        return await self._read_with(queries.stored_bytes, network)

    async def append_control(self, value: UUID, data: str, now: datetime) -> StateRecord:
        return await self._write(ops.Control(value, data, now))

    async def connected(self, network: UUID, client_id: str, cert_serial: str | None,
                        now: datetime) -> None:
        """Queued, not waited for: a connect never waits for a commit. The network's own
        queue keeps it ahead of that network's later writes (its disconnect, an erasure)."""
        await self.submit(ops.MarkConnected(network, client_id, cert_serial, now), network)

    async def disconnected(self, network: UUID, client_id: str, reason: str,
                           now: datetime) -> None:
        """Queued, not waited for (see `connected`)."""
        await self.submit(ops.MarkDisconnected(network, client_id, reason, now), network)

    async def seen(self, network: UUID, now: datetime) -> None:
        """Record activity; not waited for (last_seen is advisory)."""
        await self.submit(ops.Seen(network, now), network)

    async def reset_connections(self, now: datetime, reason: str = "GATEWAY_RESTART") -> int:
        return await self._write(ops.ResetConnections(reason, now))

    async def set_retained(self, network: UUID, topic: str, payload: bytes, qos: int,
                           now: datetime) -> None:
        await self._write(session_ops.SetRetained(network, topic, bytes(payload), int(qos), now),
                          network)

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
        """Queue the broker's MQTT state changes as one operation (see `Store`)."""
        return await self.submit(session_ops.SessionChanges(tuple(changes), now))

    async def erase_network(self, network: UUID, audit: AuditRecord | None = None) -> bool:
        """Delete every row of `network` in one transaction, appending `audit` to the audit
        trail in it; False (nothing recorded) if the network was unknown."""
        return await self._write(ops.Erase(network, audit), network)

    async def drop_reports_before(self, cutoff: datetime) -> int:
        """Retention: delete the readings and commands stamped before `cutoff`, in bounded
        writer steps (`retention`), keeping each network's stored bytes right. Returns the
        rows removed."""
        removed, resume = 0, 0
        while resume is not None:
            step, resume = await self._write(DropHistoryStep(to_us(cutoff), resume))
            removed += step
        return removed

    async def append_audit(self, record: AuditRecord, network: UUID | None = None) -> int:
        """Append `record` to the audit trail (in `network`'s queue, behind its earlier
        writes); return the last entry's seq once committed."""
        return await self._write(audit_ops.AppendAudit(record), network)

    async def audit_entries(self, *, since: datetime | None = None, after: int = 0,
                            limit: int = 100) -> list[AuditEntry]:
        """Up to `limit` audit entries after seq `after` (from `since` on), oldest first."""
        return await self._read_with(
            lambda conn: list(audit_ops.entries(conn, since, limit, after)))

    async def audit_newest(self, *, before: int | None = None, limit: int = 100
                           ) -> list[AuditEntry]:
        """Up to `limit` audit entries with seq below `before` (None: the newest), newest
        first (the console's pages)."""
        return await self._read_with(audit_ops.newest, before, limit)

    # -- reads --------------------------------------------------------------------------
    async def _read_with(self, fn: Callable[..., T], *args: Any) -> T:
        def run() -> T:
            try:
                return fn(self._read, *args)
            except sqlite3.Error as exc:
                if self._read.in_transaction:
                    self._read.execute("ROLLBACK")
                raise StorageError(f"read failed: {exc}") from exc
        return await trio.to_thread.run_sync(run, limiter=self._read_limiter)

    async def get_tree(self, network: UUID) -> NetworkTree | None:
        return await self._read_with(queries.tree, network)

    async def find_value(self, value: UUID) -> ValueLocation | None:
        return await self._read_with(queries.find_value, value)

    async def find_device(self, device: UUID) -> tuple[UUID, DeviceNode] | None:
        return await self._read_with(queries.find_device, device)

    async def history(self, value: UUID, *, kind: StateKind = StateKind.REPORT,
                      since: datetime | None = None, until: datetime | None = None,
                      limit: int = 100, newest_first: bool = False,
                      after: StateRecord | None = None) -> list[StateRecord]:
        return await self._read_with(queries.history, value, kind, since, until, limit,
                                     newest_first, after)

    async def latest_states(self, network: UUID) -> dict[UUID, StateRecord]:
        return await self._read_with(queries.latest_states, network)

    async def connection_status(self, network: UUID) -> ConnectionStatus | None:
        return await self._read_with(queries.connection_status, network)

    async def list_networks(self, *, limit: int = 100, after: UUID | None = None
                            ) -> list[ConnectionStatus]:
        return await self._read_with(queries.list_networks, limit, after)

    async def connection_history(self, network: UUID, *, limit: int = 100
                                 ) -> list[ConnectionEvent]:
        return await self._read_with(queries.connection_history, network, limit)

    async def retained(self, network: UUID) -> list[RetainedMessage]:
        return await self._read_with(queries.retained, network)

    async def load_sessions(self, network: UUID | None = None, *, queued: bool = True
                            ) -> list[StoredSession]:
        return await self._read_with(queries.sessions, network, queued)

    async def load_queued(self, network: UUID, client_id: str, upto: int
                          ) -> list[QueuedMessage]:
        return await self._read_with(queries.queued, network, client_id, upto)

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
async def open_sqlite_store(
    data_dir: str | os.PathLike[str], *, synchronous: str = "FULL", max_queue: int = 10_000,
    max_batch: int = 2_000, reset_connections: bool = True, checkpoint_interval: float = 0.2,
    queue: QueueLimits = DEFAULT_QUEUE_LIMITS, lock: bool = True,
) -> AsyncIterator[SQLiteStore]:
    """Open (creating and migrating) `<data_dir>/fleetgate.sqlite3` and run its writer.

    With `lock` (the default) the folder's lock is taken first and held while the store is
    open (lock.py): a second process opening the folder gets `FolderInUse`. `lock=False` is
    for a caller that holds it already.

    On exit, everything queued is committed before the file is closed. With
    `reset_connections`, networks left online by a previous process are marked offline
    (reason GATEWAY_RESTART): a restarted gateway holds no connection yet.
    """
    path = Path(data_dir) / DB_NAME
    held = lock_folder(Path(data_dir)) if lock else None
    try:
        store = await trio.to_thread.run_sync(
            lambda: SQLiteStore(path, synchronous=synchronous, max_queue=max_queue,
                                max_batch=max_batch, queue=queue))
    except BaseException:
        if held is not None:
            held.release()
        raise
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store._serve)
            nursery.start_soon(store._checkpointer, checkpoint_interval)
            try:
                if reset_connections:
                    await store.reset_connections(datetime.now(UTC))
                yield store
            finally:
                with trio.CancelScope(shield=True):
                    await store._writer.close()
                nursery.cancel_scope.cancel()  # the checkpointer; the writer has finished
    except BaseExceptionGroup as group:
        # The writer never raises, so a group here wraps the caller's own exception only:
        # hand it back as it was raised, not wrapped by our private nursery.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        store._close_connections()
        if held is not None:
            held.release()


def _op_cost(op: Any) -> int:
    """What an operation costs the writer's fair queues: its readings, its changes, or 1."""
    if isinstance(op, ops.Reports):
        return len(op.rows)
    if isinstance(op, session_ops.SessionChanges):
        return len(op.changes)
    return 1
