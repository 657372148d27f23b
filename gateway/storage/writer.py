"""One writer, group commit, bounded queue: how every write reaches the disk.

Theory of operation. Producers (connection tasks) `submit` write operations into a bounded
trio channel and get a `Ticket`; when the channel is full, `submit` waits (backpressure: the
caller stops reading its socket, nothing is dropped). One writer task takes everything queued
(up to `max_batch` operations), hands the batch to a worker thread that applies it in ONE
transaction and commits (one fsync), then marks every ticket of the batch done and wakes the
waiters. While a commit is in the thread, new operations pile up in the channel: the slower
the disk, the bigger the next batch (group commit). `wait(ticket)` returns only once the
transaction holding that operation has committed, so the gateway sends PUBACK/PUBREC only
then; a QoS 0 message is submitted and not waited for.

The writer is database-agnostic: `apply_batch(ops) -> list[outcome]` is the store's. It must
apply each op or report that op's exception in the outcome list, so one bad operation fails
only its own ticket (`wait` raises that exception as is: `StorageError`, or a rejection the
operation defines). An exception escaping `apply_batch` fails the whole batch's tickets with
a `StorageError`.

Shutdown is by `close()`: the channel closes, the writer drains what is queued, commits, and
exits. The writer's loop is shielded from cancellation so a cancelled gateway never abandons a
commit half-way (SQLite would roll it back anyway; the shield keeps tickets consistent).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import trio

from .errors import StorageError, StoreClosed


class Ticket:
    """A submitted write operation; `Writer.wait` tells when (and whether) it committed."""

    __slots__ = ("op", "done", "error", "result")

    def __init__(self, op: Any) -> None:
        self.op = op
        self.done = False
        self.error: BaseException | None = None
        self.result: Any = None


class Failed:
    """An outcome from `apply_batch`: this operation raised `error` and was not applied."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Writer:
    """The single writer. `apply_batch` runs in a worker thread, one batch at a time."""

    def __init__(
        self,
        apply_batch: Callable[[Sequence[Any]], list[Any]],
        *,
        max_queue: int = 10_000,
        max_batch: int = 5_000,
        count_rows: Callable[[Any], int] = lambda op: 0,
    ) -> None:
        self._apply_batch = apply_batch
        self._send, self._recv = trio.open_memory_channel[Ticket](max_queue)
        self._capacity = max_queue
        self._max_batch = max_batch
        self._count_rows = count_rows
        self._committed = trio.Event()  # set after each commit, then replaced
        self._closed = False
        self._stopped = trio.Event()
        self.commits = 0
        self.operations = 0
        self.rows = 0
        self.failed = 0
        self.last_batch = 0
        self.last_commit_seconds = 0.0
        self.busy_retries = 0

    async def submit(self, op: Any) -> Ticket:
        """Queue `op`; waits only while the queue is full. Raises StoreClosed after close()."""
        if self._closed:
            raise StoreClosed("the store is closed")
        ticket = Ticket(op)
        try:
            await self._send.send(ticket)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise StoreClosed("the store is closed") from None
        return ticket

    async def wait(self, ticket: Ticket) -> Any:
        """Return once `ticket`'s transaction committed (its result), or raise its error."""
        while not ticket.done:
            if self._stopped.is_set():
                raise StoreClosed("the store closed before this write committed")
            await self._committed.wait()
        if ticket.error is not None:
            raise ticket.error
        return ticket.result

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer loop: runs until `close()` and the queue is drained."""
        task_status.started()
        try:
            with trio.CancelScope(shield=True):
                async for first in self._recv:
                    batch = [first]
                    while len(batch) < self._max_batch:
                        try:
                            batch.append(self._recv.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    await self._commit(batch)
        finally:
            self._stopped.set()
            self._committed.set()

    async def _commit(self, batch: list[Ticket]) -> None:
        ops = [t.op for t in batch]
        started = time.perf_counter()
        try:
            outcomes = await trio.to_thread.run_sync(self._apply_batch, ops)
        except Exception as exc:  # apply_batch itself broke: fail this batch, keep serving
            failed = StorageError(f"write failed: {exc!r}")
            failed.__cause__ = exc
            outcomes = [Failed(failed)] * len(batch)
        self.last_commit_seconds = time.perf_counter() - started
        self.commits += 1
        self.last_batch = len(batch)
        for ticket, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Failed):
                ticket.error = outcome.error
                self.failed += 1
            else:
                ticket.result = outcome
                self.operations += 1
                self.rows += self._count_rows(ticket.op)
            ticket.done = True
        event, self._committed = self._committed, trio.Event()
        event.set()

    async def close(self) -> None:
        """Stop taking writes, let the writer commit what is queued, and wait for it."""
        self._closed = True
        await self._send.aclose()
        await self._stopped.wait()

    def queue_statistics(self) -> tuple[int, int]:
        """(operations queued, producers waiting for room)."""
        s = self._send.statistics()
        return s.current_buffer_used, s.tasks_waiting_send
