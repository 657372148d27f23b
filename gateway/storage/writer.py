"""One writer, group commit, a fair queue per network: how every write reaches the disk.

Theory of operation. Producers (connection tasks) `submit(op, key)` write operations and get
a `Ticket`; `key` is the network the operation belongs to (`None`: the shared queue, for
operations of no single network). Each key has its own FIFO queue, bounded in operations and
in cost (a report operation costs its readings, anything else its changes or 1). When a
key's queue is full, `submit` waits (backpressure: the caller stops reading its socket,
nothing is dropped), and only that key's producers wait: a key whose queue is empty always
gets its operation in. A total bound across keys keeps memory bounded as well: past it, only
a key holding less than its fair share (the total divided by the keys with work) may still
queue, so a flood of one key never makes another wait.

One writer task builds each batch by deficit round robin (DRR, Shreedhar and Varghese 1995)
over the keys that have work, in a ring: a key's turn adds `quantum` to its deficit and takes
operations from its head while their cost fits in the deficit; a key that empties leaves the
ring (its deficit reset), one that still has work goes to the back. The batch closes at
`max_batch` cost; a turn cut short by that limit ends there too (the key keeps its deficit,
and goes behind the keys still waiting). So everything ready goes into the next transaction
up to `max_batch` (group commit), and a key that starts submitting is taken by the next
batch or the one after, whatever another key has queued: one network's flood delays another
network's commit by at most about one batch. Building a batch costs
O(keys visited + operations taken), never O(keys known).

The batch goes to a worker thread that applies it in ONE transaction and commits (one fsync);
then every ticket of the batch is marked done and the waiters wake. While a commit is in the
thread, new operations pile up in the queues: the slower the disk, the bigger the next batch.
`wait(ticket)` returns only once the transaction holding that operation has committed, so
the gateway sends PUBACK/PUBREC only then; a QoS 0 message is submitted and not waited for
(its producer still waits for room in its network's queue).

The writer is database-agnostic: `apply_batch(ops) -> list[outcome]` is the store's. It must
apply each op or report that op's exception in the outcome list, so one bad operation fails
only its own ticket (`wait` raises that exception as is: `StorageError`, or a rejection the
operation defines). An exception escaping `apply_batch` fails the whole batch's tickets with
a `StorageError`.

Shutdown is by `close()`: no new operation is taken, waiting producers get `StoreClosed`, the
writer drains what is queued, commits, and exits. The writer's loop is shielded from
cancellation so a cancelled gateway never abandons a commit half-way (SQLite would roll it
back anyway; the shield keeps tickets consistent).
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from ..latency import Histogram
from .errors import StorageError, StoreClosed


class Ticket:
    """A submitted write operation; `Writer.wait` tells when (and whether) it committed.

    `batch`: the number of the batch (transaction) that took it, 1 for the first."""

    __slots__ = ("op", "done", "error", "result", "batch")

    def __init__(self, op: Any) -> None:
        self.op = op
        self.done = False
        self.error: BaseException | None = None
        self.result: Any = None
        self.batch = 0


class Failed:
    """An outcome from `apply_batch`: this operation raised `error` and was not applied."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Queue:
    """One key's queued operations, its DRR deficit, and the producers waiting for room."""

    __slots__ = ("key", "items", "ops", "cost", "deficit", "room", "waiting", "in_ring")

    def __init__(self, key: Hashable | None) -> None:
        self.key = key
        self.items: deque[tuple[Ticket, int]] = deque()
        self.ops = 0
        self.cost = 0
        self.deficit = 0
        self.room: trio.Event | None = None  # set when operations leave this queue
        self.waiting = 0
        self.in_ring = False


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """The bounds of the writer's queues a deployment sets (docs/operations.md)."""

    max_queued_operations_per_network: int = 1_000
    """Write operations one network may have queued (a socket read's reports are one)."""
    max_queued_reports_per_network: int = 20_000
    """Readings (report rows; other operations count their changes, or 1) one network may
    have queued; past either bound that network's producers wait (stop reading)."""
    max_queued_reports: int = 200_000
    """The same, in total across networks; past it only networks below their share queue."""


DEFAULT_QUEUE_LIMITS = QueueLimits()


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    """The writer's queues now, and how often producers waited (counters since start)."""

    queued: int  # operations in every key's queue
    queued_cost: int  # their cost (readings, changes)
    keys: int  # keys with queued operations
    producers_waiting: int
    waits_key_full: int  # submits that waited because their own key's queue was full
    waits_total_full: int  # ... because the total was full and they held their share
    largest: tuple[tuple[str, int, int], ...]  # top keys by cost: (key, operations, cost)


class Writer:
    """The single writer. `apply_batch` runs in a worker thread, one batch at a time.

    Bounds: `max_queue` operations and `max_queued_cost` cost in total; `max_queue_per_key`
    operations and `max_cost_per_key` cost per key (an operation costing more than that still
    gets in when its key's queue is empty). `max_batch`: the cost one transaction takes;
    `quantum`: the cost a key may take per turn. `cost(op)` (at least 1) and
    `count_rows(op)` (report rows, for statistics) are the store's.
    """

    def __init__(
        self,
        apply_batch: Callable[[Sequence[Any]], list[Any]],
        *,
        max_queue: int = 10_000,
        max_queued_cost: int = 200_000,
        max_queue_per_key: int = 1_000,
        max_cost_per_key: int = 20_000,
        max_batch: int = 2_000,
        quantum: int = 1_000,
        cost: Callable[[Any], int] = lambda op: 1,
        count_rows: Callable[[Any], int] = lambda op: 0,
    ) -> None:
        if min(max_queue, max_queued_cost, max_queue_per_key, max_cost_per_key, max_batch,
               quantum) < 1:
            raise ValueError("writer bounds must be at least 1")
        self._apply_batch = apply_batch
        self._capacity = max_queue
        self._max_cost = max_queued_cost
        self._key_capacity = min(max_queue_per_key, max_queue)
        self._key_max_cost = min(max_cost_per_key, max_queued_cost)
        self._max_batch = max_batch
        self._quantum = min(quantum, max_batch)  # a turn never spans more than one batch
        self._cost = cost
        self._count_rows = count_rows
        self._queues: dict[Hashable | None, _Queue] = {}  # keys with work or waiters
        self._ring: deque[_Queue] = deque()  # keys with work, in service order
        self._ops = 0
        self._queued_cost = 0
        self._waiting = 0
        self._work = trio.Event()  # set when work arrives or on close
        self._committed = trio.Event()  # set after each commit, then replaced
        self._closed = False
        self._stopped = trio.Event()
        self.batches = 0  # batches taken (the one being committed included)
        self.commits = 0
        self.operations = 0
        self.rows = 0
        self.failed = 0
        self.last_batch = 0
        self.last_commit_seconds = 0.0
        self.commit_latency = Histogram()  # every commit's duration, for /metrics
        self.busy_retries = 0
        self.waits_key_full = 0
        self.waits_total_full = 0

    # -- producers ----------------------------------------------------------------------
    async def submit(self, op: Any, key: Hashable | None = None) -> Ticket:
        """Queue `op` in `key`'s queue; waits only while that queue may not take it.

        Raises:
            StoreClosed: after close() (also while waiting for room).
        """
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise StoreClosed("the store is closed")
        cost = max(1, self._cost(op))
        q = self._queues.get(key)
        if q is None:
            q = self._queues[key] = _Queue(key)
        if not self._admissible(q, cost):
            await self._wait_room(q, cost)
        ticket = Ticket(op)
        q.items.append((ticket, cost))
        q.ops += 1
        q.cost += cost
        self._ops += 1
        self._queued_cost += cost
        if not q.in_ring:
            q.in_ring = True
            self._ring.append(q)
            self._work.set()
        return ticket

    def _admissible(self, q: _Queue, cost: int) -> bool:
        if not q.items:
            return True  # a key with nothing queued never waits for the others
        if q.ops >= self._key_capacity or q.cost + cost > self._key_max_cost:
            return False
        if self._ops < self._capacity and self._queued_cost + cost <= self._max_cost:
            return True
        # The total is full: only a key holding less than its fair share may add more.
        keys = len(self._ring)
        return q.ops < self._capacity // keys and q.cost + cost <= self._max_cost // keys

    async def _wait_room(self, q: _Queue, cost: int) -> None:
        if q.ops >= self._key_capacity or q.cost + cost > self._key_max_cost:
            self.waits_key_full += 1
        else:
            self.waits_total_full += 1
        q.waiting += 1
        self._waiting += 1
        try:
            while not self._admissible(q, cost):
                if self._closed:
                    raise StoreClosed("the store is closed")
                if q.room is None:
                    q.room = trio.Event()
                await q.room.wait()
            if self._closed:
                raise StoreClosed("the store is closed")
        finally:
            q.waiting -= 1
            self._waiting -= 1
            self._forget_if_idle(q)

    def _forget_if_idle(self, q: _Queue) -> None:
        if not q.items and not q.waiting and self._queues.get(q.key) is q:
            del self._queues[q.key]

    async def wait(self, ticket: Ticket) -> Any:
        """Return once `ticket`'s transaction committed (its result), or raise its error."""
        while not ticket.done:
            if self._stopped.is_set():
                raise StoreClosed("the store closed before this write committed")
            await self._committed.wait()
        if ticket.error is not None:
            raise ticket.error
        return ticket.result

    # -- the writer task ----------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer loop: runs until `close()` and the queues are drained."""
        task_status.started()
        try:
            with trio.CancelScope(shield=True):
                while True:
                    if not self._ring:
                        if self._closed:
                            break
                        self._work = trio.Event()
                        await self._work.wait()
                        continue
                    await self._commit(self._take_batch())
        finally:
            self._stopped.set()
            self._committed.set()

    def _take_batch(self) -> list[Ticket]:
        """Deficit round robin over the ring, up to `max_batch` cost (see the module doc)."""
        self.batches += 1
        batch: list[Ticket] = []
        budget = self._max_batch
        ring = self._ring
        while ring and budget > 0:
            q = ring[0]
            q.deficit += self._quantum
            items = q.items
            taken = 0
            full = False
            while items:
                ticket, cost = items[0]
                if cost > q.deficit:
                    break  # its turn is over; the deficit carries to the next one
                if cost > budget and batch:
                    full = True  # the batch is full: this turn ends here, deficit kept
                    break
                items.popleft()
                ticket.batch = self.batches
                q.deficit -= cost
                q.cost -= cost
                self._queued_cost -= cost
                budget -= cost
                taken += 1
                batch.append(ticket)
            self._took(q, taken)
            ring.popleft()
            if items:
                ring.append(q)  # behind every key that was waiting: they go first next time
            else:
                q.deficit = 0
                q.in_ring = False
                self._forget_if_idle(q)
            if full:
                break
        return batch

    def _took(self, q: _Queue, taken: int) -> None:
        if not taken:
            return
        q.ops -= taken
        self._ops -= taken
        if q.room is not None:  # its producers may have room now
            q.room.set()
            q.room = None

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
        self.commit_latency.observe(self.last_commit_seconds)
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
        self._work.set()
        for q in list(self._queues.values()):
            if q.room is not None:  # waiting producers: StoreClosed
                q.room.set()
                q.room = None
        await self._stopped.wait()

    # -- statistics ---------------------------------------------------------------------
    def queue_statistics(self) -> tuple[int, int]:
        """(operations queued, producers waiting for room)."""
        return self._ops, self._waiting

    def statistics(self, top: int = 5) -> QueueStatistics:
        """The queues now; `largest` names at most `top` keys (O(keys with work))."""
        largest = heapq.nlargest(top, self._ring, key=lambda q: q.cost)
        return QueueStatistics(
            queued=self._ops, queued_cost=self._queued_cost, keys=len(self._ring),
            producers_waiting=self._waiting, waits_key_full=self.waits_key_full,
            waits_total_full=self.waits_total_full,
            largest=tuple(("shared" if q.key is None else str(q.key), q.ops, q.cost)
                          for q in largest))
