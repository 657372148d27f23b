"""The single writer: many messages per transaction, backpressure instead of loss, isolation."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import timedelta

import pytest
import trio
from storehelpers import T0, model_decl, session_ops_of

from gateway.ingest import ReportRow
from gateway.storage import DB_NAME, StorageError, StoreClosed, open_sqlite_store


async def declared_value(store, network):
    tree = await store.declare_model(network, model_decl(), T0)
    return tree.devices[0].values[0].uuid  # thermo/temp, permission r


def row(value, i: int) -> ReportRow:
    return ReportRow(value, str(i), T0 + timedelta(microseconds=i), T0)


async def count_rows(store, value) -> list[str]:
    return [r.data for r in await store.history(value, limit=1_000_000)]


async def test_concurrent_writers_share_transactions_and_all_commit(store, network):
    value = await declared_value(store, network)
    before = store.statistics().commits
    writers, each = 50, 20

    async def writer(w: int) -> None:
        for i in range(each):
            await store.append_reports([row(value, w * each + i)])  # waits for its commit

    async with trio.open_nursery() as nursery:
        for w in range(writers):
            nursery.start_soon(writer, w)
    stats = store.statistics()
    commits = stats.commits - before
    assert commits < writers * each  # group commit: fewer transactions than messages
    assert stats.reports == writers * each and stats.failed_operations == 0
    assert sorted(await count_rows(store, value), key=int) == [
        str(i) for i in range(writers * each)]


async def test_append_returns_only_after_the_commit_is_visible_to_another_connection(
        tmp_path, network):
    async with open_sqlite_store(tmp_path) as store:
        value = await declared_value(store, network)
        for i in range(5):
            await store.append_reports([row(value, i)])
            other = sqlite3.connect(tmp_path / DB_NAME)
            (n,) = other.execute("SELECT count(*) FROM state_log").fetchone()
            other.close()
            assert n == i + 1


async def test_a_slow_writer_makes_producers_wait_and_loses_nothing(tmp_path, network):
    async with open_sqlite_store(tmp_path, max_queue=8, max_batch=4) as store:
        value = await declared_value(store, network)
        # Another process's write transaction stalls our writer (SQLite's write lock), the
        # way a slow disk or a backup would.
        blocker = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None,
                                  check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        producers, each = 30, 5
        done = []

        async def producer(p: int) -> None:
            for i in range(each):
                await store.append_reports([row(value, p * each + i)])
            done.append(p)

        async with trio.open_nursery() as nursery:
            for p in range(producers):
                nursery.start_soon(producer, p)
            try:
                with trio.fail_after(30):
                    while store.statistics().queued < 8:  # the queue fills up, then ...
                        await trio.sleep(0.01)
                stats = store.statistics()
                assert stats.queued == stats.queue_capacity == 8
                # ... the writer holds at most one batch (4), the rest wait for room
                assert stats.producers_waiting >= producers - 8 - 4
                assert done == []
            finally:
                blocker.execute("COMMIT")
                blocker.close()
        assert sorted(done) == list(range(producers))
        assert len(await count_rows(store, value)) == producers * each


async def test_qos0_style_submit_does_not_wait_yet_is_stored_by_close(open_store, network):
    async with open_store() as store:
        value = await declared_value(store, network)
        tickets = [await store.submit_reports([row(value, i)]) for i in range(100)]
    async with open_store() as store:
        assert len(await count_rows(store, value)) == 100
    assert all(t.done and t.error is None for t in tickets)


async def test_a_report_for_an_unknown_value_fails_alone_in_its_batch(store, network):
    value = await declared_value(store, network)
    good1 = await store.submit_reports([row(value, 1)])
    bad = await store.submit_reports([row(uuid.uuid4(), 2)])
    good2 = await store.submit_reports([row(value, 3)])
    await store.wait_committed(good1)
    await store.wait_committed(good2)
    with pytest.raises(StorageError, match="no Report state"):
        await store.wait_committed(bad)
    assert await count_rows(store, value) == ["1", "3"]


async def test_a_report_on_a_write_only_value_has_no_report_state_to_land_in(store, network):
    tree = await store.declare_model(network, model_decl(), T0)
    firmware = tree.devices[0].values[2].uuid  # permission w
    with pytest.raises(StorageError):
        await store.append_reports([row(firmware, 1)])


async def test_an_sql_failure_in_a_batch_is_retried_one_operation_at_a_time(store, network):
    value = await declared_value(store, network)
    # A row whose data the database refuses (NOT NULL) poisons the shared transaction; the writer
    # rolls back and re-applies each operation alone, so only that one fails.
    poisoned = ReportRow(value, None, T0, T0)  # type: ignore[arg-type]
    good1 = await store.submit_reports([row(value, 1)])
    bad = await store.submit_reports([poisoned])
    good2 = await store.submit_reports([row(value, 2)])
    for t in (good1, good2):
        await store.wait_committed(t)
    with pytest.raises(StorageError):
        await store.wait_committed(bad)
    assert sorted(await count_rows(store, value)) == ["1", "2"]


async def test_writes_after_close_are_refused(open_store, network):
    async with open_store() as store:
        value = await declared_value(store, network)
    with pytest.raises(StoreClosed):
        await store.submit_reports([row(value, 1)])


async def test_the_wal_is_checkpointed_beside_the_writer_not_inside_its_commits(
        tmp_path, network):
    async with open_sqlite_store(tmp_path, checkpoint_interval=0.01) as store:
        value = await declared_value(store, network)
        await store.append_reports([row(value, i) for i in range(2000)])
        committed = store.statistics().commits
        with trio.fail_after(10):  # a periodic background task: there is no event to wait on
            while store.checkpointed_commits < committed:
                await trio.sleep(0.01)
        # the database file alone, without its WAL, now holds the rows: a copy of it opens
        # with all 2000 (no commit ran since, so no checkpoint is under way)
        copy = tmp_path / "copy.sqlite3"
        copy.write_bytes((tmp_path / DB_NAME).read_bytes())
        conn = sqlite3.connect(copy)
        assert conn.execute("SELECT count(*) FROM state_log").fetchone()[0] == 2000
        conn.close()


async def test_a_value_the_database_cannot_store_fails_only_its_own_operation(store, network):
    value = await declared_value(store, network)
    good = await store.submit_reports([row(value, 1)])
    # a lone surrogate cannot be encoded as UTF-8 for the database: that write fails, alone
    set_retained = session_ops_of(store).SetRetained
    bad = await store.submit(set_retained(network, "bad\ud800", b"x", 1, T0))
    await store.set_retained(network, "fine", b"y", 1, T0)
    await store.wait_committed(good)
    with pytest.raises(StorageError, match="SetRetained failed"):
        await store.wait_committed(bad)
    assert [m.topic for m in await store.retained(network)] == ["fine"]
    assert await count_rows(store, value) == ["1"]


async def test_a_resent_timestamped_reading_is_stored_once(store, network):
    value = await declared_value(store, network)
    stamped = ReportRow(value, "21.5", T0 - timedelta(minutes=1), T0)
    await store.append_reports([stamped])
    # the PUBACK was lost: the device sends the same reading again, later
    await store.append_reports([ReportRow(value, "21.5", stamped.timestamp,
                                           T0 + timedelta(seconds=5))])
    # same time, other data; and readings without a device timestamp: all kept
    await store.append_reports([ReportRow(value, "22", stamped.timestamp, T0),
                                ReportRow(value, "21.5", T0, T0),
                                ReportRow(value, "21.5", T0, T0)])
    assert sorted(await count_rows(store, value)) == ["21.5", "21.5", "21.5", "22"]
