"""The fair writer: one queue per network served by deficit round robin, backpressure per
network (QoS 0 too), a total bound, outcomes per operation and close() draining.

Real SQLite files throughout. A second connection holding SQLite's write lock stalls the
writer (as a slow disk or a backup would), so queues fill deterministically; tests
synchronise with `trio.testing.wait_all_tasks_blocked`, never with sleeps.
"""

from __future__ import annotations

import sqlite3
import tempfile
import uuid
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storehelpers import T0, model_decl

from gateway.ingest import ReportRow
from gateway.storage import DB_NAME, StorageError, StoreClosed, open_sqlite_store
from gateway.storage.writer import QueueLimits

A, B = uuid.UUID(int=1), uuid.UUID(int=2)


async def declare(store, network):
    tree = await store.declare_model(network, model_decl(), T0)
    return tree.devices[0].values[0].uuid  # thermo/temp


def rows(value, n: int, start: int = 0) -> list[ReportRow]:
    return [ReportRow(value, str(i % 100), T0 + timedelta(microseconds=start + i), T0)
            for i in range(n)]


def stored(data_dir: Path) -> int:
    conn = sqlite3.connect(data_dir / DB_NAME)
    try:
        return conn.execute("SELECT count(*) FROM state_log").fetchone()[0]
    finally:
        conn.close()


class WriteLock:
    """SQLite's write lock held by another connection: the writer stalls in BEGIN (as on a
    slow disk or during a backup) until `release()`."""

    def __init__(self, data_dir: Path) -> None:
        self.conn = sqlite3.connect(data_dir / DB_NAME, isolation_level=None,
                                    check_same_thread=False)
        self.conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        if self.conn is not None:
            self.conn.execute("COMMIT")
            self.conn.close()
            self.conn = None


@contextmanager
def write_lock(data_dir: Path):
    lock = WriteLock(data_dir)
    try:
        yield lock
    finally:
        lock.release()


# -- the fairness property -------------------------------------------------------------------

async def _flood_then_one(data_dir: Path, sizes: list[int], max_batch: int, stall: bool):
    async with open_sqlite_store(data_dir, max_batch=max_batch,
                                 queue=QueueLimits(10_000, 1_000_000, 1_000_000)) as store:
        va, vb = await declare(store, A), await declare(store, B)
        tickets_a = []
        lock = WriteLock(data_dir) if stall else None
        try:
            start = 0
            for n in sizes:  # A's flood: QoS 0, never waited for
                tickets_a.append(await store.submit_reports(rows(va, n, start), A))
                start += n
            ticket_b = await store.submit_reports(rows(vb, 1), B)
            taken = store._writer.batches  # batches taken while B's report was queued
        finally:
            if lock is not None:
                lock.release()
        await store.wait_committed(ticket_b)
        # B goes in the next batch, or the one after when A's turn had filled it
        assert ticket_b.batch <= taken + 2
    # close() drained everything A queued; every operation committed on its own terms
    assert all(t.done and t.error is None for t in tickets_a)
    return sum(sizes) + 1


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.sampled_from([1, 7, 100, 1000]), max_size=40),
       max_batch=st.sampled_from([1, 500, 1000, 5000]), stall=st.booleans())
def test_a_network_submitting_one_operation_is_served_within_two_batches_whatever_another_holds(
        sizes, max_batch, stall):
    with tempfile.TemporaryDirectory() as tmp:
        expected = trio.run(_flood_then_one, Path(tmp), sizes, max_batch, stall)
        assert stored(Path(tmp)) == expected


# -- backpressure per network ----------------------------------------------------------------

async def test_a_qos0_flood_of_one_network_waits_alone_and_another_network_goes_first(
        tmp_path):
    limits = QueueLimits(max_queued_operations_per_network=4,
                         max_queued_reports_per_network=4_000, max_queued_reports=100_000)
    async with open_sqlite_store(tmp_path, queue=limits, max_batch=2_000) as store:
        va, vb = await declare(store, A), await declare(store, B)
        flood: list = []
        lock = WriteLock(tmp_path)
        async with trio.open_nursery() as nursery:
            async def flooder() -> None:  # QoS 0 batch reports: never waits for a commit
                for i in range(12):
                    flood.append(await store.submit_reports(rows(va, 1000, i * 1000), A))

            nursery.start_soon(flooder)
            await trio.testing.wait_all_tasks_blocked()
            # the writer took one batch and stalls on the lock; A's queue is full and its
            # producer waits for room in A's queue
            stats = store.statistics()
            assert stats.producers_waiting == 1 and stats.waits_network_full >= 1
            assert stats.largest_queues[0][:2] == (str(A), 4)
            queued_a = len(flood)
            ticket_b = []

            async def healthy() -> None:
                ticket_b.append(await store.submit_reports(rows(vb, 1), B))

            nursery.start_soon(healthy)
            await trio.testing.wait_all_tasks_blocked()
            assert ticket_b  # B never waited on A's full queue
            assert len(flood) == queued_a  # A still does
            assert store.statistics().producers_waiting == 1
            lock.release()
        (ticket_b,) = ticket_b
        await store.wait_committed(ticket_b)
        for t in flood:
            await store.wait_committed(t)
        # B's report went in with A's next turn, ahead of the rest of A's queue and flood
        queued_then = flood[1:queued_a]
        assert ticket_b.batch <= min(t.batch for t in queued_then) + 1
        assert sum(t.batch > ticket_b.batch for t in flood) >= len(flood) - queued_a
    assert stored(tmp_path) == 1000 * 12 + 1


async def test_when_the_total_is_full_only_networks_below_their_share_queue_more(tmp_path):
    # 3,000 readings in total: A (2,000) and C (1,000) fill it. B, with nothing queued, gets
    # in, and again while it holds less than its share (3,000 / 3 networks); A, holding more,
    # waits although its own queue has room.
    limits = QueueLimits(max_queued_operations_per_network=100,
                         max_queued_reports_per_network=100_000, max_queued_reports=3_000)
    c = uuid.UUID(int=3)
    async with open_sqlite_store(tmp_path, queue=limits) as store:
        va, vb, vc = await declare(store, A), await declare(store, B), await declare(store, c)
        with write_lock(tmp_path):
            tickets = [await store.submit_reports(rows(va, 1), A)]
            await trio.testing.wait_all_tasks_blocked()  # the writer holds it, stalled
            for i in range(2):
                tickets.append(await store.submit_reports(rows(va, 1000, i * 1000), A))
            tickets.append(await store.submit_reports(rows(vc, 1000), c))
            assert store.statistics().queued_reports == 3_000
            tickets.append(await store.submit_reports(rows(vb, 500), B))
            tickets.append(await store.submit_reports(rows(vb, 400, 500), B))
            assert store.statistics().queued_reports == 3_900  # B got in twice
            async with trio.open_nursery() as nursery:
                async def more_a() -> None:
                    tickets.append(await store.submit_reports(rows(va, 1000, 5000), A))

                nursery.start_soon(more_a)
                await trio.testing.wait_all_tasks_blocked()
                stats = store.statistics()
                assert stats.producers_waiting == 1 and stats.waits_total_full == 1
                assert stats.waits_network_full == 0
                nursery.cancel_scope.cancel()
        for t in tickets:
            await store.wait_committed(t)
        assert store.statistics().queued == 0
    assert stored(tmp_path) == 1 + 2000 + 1000 + 900


async def test_an_operation_larger_than_the_network_bound_goes_in_alone(tmp_path):
    limits = QueueLimits(max_queued_operations_per_network=2,
                         max_queued_reports_per_network=10, max_queued_reports=100)
    async with open_sqlite_store(tmp_path, queue=limits, max_batch=50) as store:
        va = await declare(store, A)
        await store.append_reports(rows(va, 1000), A)  # 100 times the bound, alone: no wait
    assert stored(tmp_path) == 1000


# -- outcomes, order, close ------------------------------------------------------------------

async def test_operations_of_one_network_keep_their_order_and_fail_alone(tmp_path):
    async with open_sqlite_store(tmp_path, max_batch=3) as store:
        va, vb = await declare(store, A), await declare(store, B)
        with write_lock(tmp_path):
            plug = await store.submit_reports(rows(va, 1), A)
            await trio.testing.wait_all_tasks_blocked()
            ta = [await store.submit_reports([ReportRow(va, str(i), T0, T0)], A)
                  for i in range(6)]
            bad = await store.submit_reports([ReportRow(uuid.uuid4(), "1", T0, T0)], B)
            tb = [await store.submit_reports([ReportRow(vb, str(i), T0, T0)], B)
                  for i in range(3)]
        for t in [plug, *ta, *tb]:
            await store.wait_committed(t)
        with pytest.raises(StorageError, match="no Report state"):
            await store.wait_committed(bad)
        # each network's operations were taken in the order submitted
        assert [t.batch for t in ta] == sorted(t.batch for t in ta)
        assert [t.batch for t in tb] == sorted(t.batch for t in tb)
        # and B was not left behind all of A
        assert tb[0].batch <= ta[-1].batch
        history = await store.history(va, limit=100)
        assert [r.data for r in history][-6:] == [str(i) for i in range(6)]


async def test_close_drains_every_queue_and_a_waiting_producer_gets_store_closed(tmp_path):
    limits = QueueLimits(max_queued_operations_per_network=2,
                         max_queued_reports_per_network=100, max_queued_reports=1_000)
    queued = []
    refused = []
    async with open_sqlite_store(tmp_path, queue=limits) as store:
        va, vb = await declare(store, A), await declare(store, B)
        lock = WriteLock(tmp_path)
        async with trio.open_nursery() as nursery:
            async def producer(network, value) -> None:
                try:
                    for i in range(5):
                        queued.append(await store.submit_reports(rows(value, 1, i), network))
                except StoreClosed:
                    refused.append(network)

            nursery.start_soon(producer, A, va)
            nursery.start_soon(producer, B, vb)
            await trio.testing.wait_all_tasks_blocked()
            assert store.statistics().producers_waiting == 2
            nursery.start_soon(store._writer.close)
            await trio.testing.wait_all_tasks_blocked()
            assert sorted(refused) == [A, B]  # woken with StoreClosed, not left waiting
            assert store.statistics().queued > 0  # not committed yet: the writer stalls
            lock.release()  # the writer drains every queue, then close() returns
        with pytest.raises(StoreClosed):
            await store.submit_reports(rows(va, 1), A)
    assert all(t.done and t.error is None for t in queued)
    assert stored(tmp_path) == len(queued) >= 4  # each queue full, plus the stalled batch
