"""What only the PostgreSQL store has: weekly partitions of the readings and retention by
dropping them, the binary COPY path, reconnection after the server's connections are
ended, and erasure and stored bytes checked in its own tables. The `Store` contract itself
is checked on both backends by the other tests of this folder."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import trio
from storehelpers import T0, model_decl
from test_erasure import populate

from gateway.ingest import ReportRow
from gateway.storage import StorageError
from gateway.storage.postgres import open_postgres_store
from gateway.storage.postgres.ops import ROW_OVERHEAD
from gateway.storage.postgres.schema import (
    AHEAD_WEEKS,
    create_week,
    existing_weeks,
    partition_name,
    week_of,
)


def sql(url: str, query: str, *args) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, args or None)
        return cur.fetchall() if cur.description else []


def tables(url: str) -> list[str]:
    """Every table of ours, partitions included (each holds rows)."""
    return [t for (t,) in sql(url, "SELECT tablename FROM pg_tables WHERE schemaname = "
                                   "'public' ORDER BY tablename")]


def dump(url: str) -> dict[str, list[tuple]]:
    return {t: sql(url, f"SELECT * FROM ONLY {t}") for t in tables(url)}


async def declared(store, network):
    tree = await store.declare_model(network, model_decl(), T0)
    return tree.devices[0].values[0].uuid  # thermo/temp, permission r


async def test_erasing_a_network_leaves_no_row_of_it_in_any_table_or_partition(postgres_url):
    gone, kept = uuid.uuid4(), uuid.uuid4()
    async with open_postgres_store(postgres_url) as store:
        gone_uuids = await populate(store, gone)
        await populate(store, kept)
        before = dump(postgres_url)
        assert before[partition_name(week_of(int(T0.timestamp() * 1e6)))], "a week partition"
        assert await store.erase_network(gone) is True
        after = dump(postgres_url)
        for table, rows in after.items():
            if table in ("schema_version", "audit"):
                continue
            assert len(rows) * 2 == len(before[table]), table
            for r in rows:
                assert not gone_uuids & {str(c) for c in r}, (table, r)
        assert await store.get_tree(gone) is None and await store.retained(gone) == []
        assert await store.load_sessions(gone) == []
        assert (await store.get_tree(kept)).devices


def summed(url: str) -> dict[uuid.UUID, int]:
    return dict(sql(url, "SELECT n.uuid, sum(octet_length(l.data) + %s) FROM state_log l "
                         "JOIN states s ON s.id = l.state_id JOIN networks n "
                         "ON n.id = s.network_id GROUP BY n.uuid", ROW_OVERHEAD))


def usage_rows(url: str) -> dict[uuid.UUID, int]:
    return dict(sql(url, "SELECT n.uuid, u.stored_bytes FROM network_usage u "
                         "JOIN networks n ON n.id = u.network_id"))


async def test_stored_bytes_follow_copied_rows_resends_commands_and_erasure(postgres_url):
    a, b = uuid.uuid4(), uuid.uuid4()
    async with open_postgres_store(postgres_url) as store:
        temp_a, temp_b = await declared(store, a), await declared(store, b)
        target_a = (await store.get_tree(a)).devices[0].values[1].uuid
        await store.append_reports([ReportRow(temp_a, "21.5", T0, T0),
                                    ReportRow(temp_a, "ünï", T0, T0)], a)
        stamped = ReportRow(temp_a, "22", T0 - timedelta(minutes=1), T0)
        await store.append_reports([stamped], a)
        await store.append_reports([stamped, ReportRow(temp_a, "23", stamped.timestamp, T0)], a)
        await store.append_control(target_a, "20", T0)
        await store.append_reports([ReportRow(temp_b, "1", T0, T0)], b)
        expected_a = 4 + 5 + 2 + 2 + 2 + 5 * ROW_OVERHEAD
        assert usage_rows(postgres_url) == summed(postgres_url) == {
            a: expected_a, b: 1 + ROW_OVERHEAD}
        assert await store.stored_bytes(a) == expected_a
        assert await store.erase_network(a)
        assert usage_rows(postgres_url) == {b: 1 + ROW_OVERHEAD}
    async with open_postgres_store(postgres_url) as store:
        assert await store.stored_bytes(b) == 1 + ROW_OVERHEAD


async def test_text_goes_through_binary_copy_unchanged_in_one_transaction(postgres_url,
                                                                          network):
    tricky = ["tab\there", "new\nline", "back\\slash", "quote'\"", "\\N", "", "ünï ✓ 🌡",
              "x" * 5000]
    rows = [ReportRow(None, d, T0 + timedelta(microseconds=i), T0 + timedelta(
        microseconds=i)) for i, d in enumerate(tricky * 250)]
    async with open_postgres_store(postgres_url, max_batch=5_000) as store:
        value = await declared(store, network)
        rows = [ReportRow(value, r.data, r.timestamp, r.received) for r in rows]
        before = store.statistics().commits
        await store.append_reports(rows)
        assert store.statistics().commits == before + 1
        stored = await store.history(value, limit=10_000)
    assert [r.data for r in stored] == [r.data for r in rows]


async def test_readings_go_to_their_weeks_partition_and_far_off_ones_to_the_other(
        postgres_url, network):
    now = datetime.now(UTC)
    far_past, far_future = now - timedelta(days=3650), now + timedelta(weeks=AHEAD_WEEKS + 3)
    async with open_postgres_store(postgres_url) as store:
        value = await declared(store, network)
        times = [now, now - timedelta(weeks=1), far_past, far_future]
        await store.append_reports([ReportRow(value, str(i), t, now)
                                    for i, t in enumerate(times)])
        weeks = {week_of(int(t.timestamp() * 1e6)) for t in times[:2]}
        with psycopg.connect(postgres_url) as conn:
            assert weeks <= existing_weeks(conn)
        in_other = sql(postgres_url, "SELECT data FROM state_log_other ORDER BY data")
        assert in_other == [("2",), ("3",)]
        for week in weeks:
            assert len(sql(postgres_url, f"SELECT 1 FROM {partition_name(week)}")) == 1
        # The far-future week comes into the window: its reading moves into its partition.
        future_week = week_of(int(far_future.timestamp() * 1e6))
        with psycopg.connect(postgres_url) as conn:
            create_week(conn, future_week)
        assert sql(postgres_url, f"SELECT data FROM {partition_name(future_week)}") == [("3",)]
        assert sql(postgres_url, "SELECT data FROM state_log_other") == [("2",)]
        assert [r.data for r in await store.history(value)] == ["2", "1", "0", "3"]


async def test_this_and_next_weeks_partitions_exist_before_any_reading(postgres_url):
    this_week = week_of(int(datetime.now(UTC).timestamp() * 1e6))
    async with open_postgres_store(postgres_url):
        with psycopg.connect(postgres_url) as conn:
            assert {this_week, this_week + 1} <= existing_weeks(conn)


async def test_retention_drops_whole_weeks_and_keeps_stored_bytes_right(postgres_url,
                                                                         network):
    now = datetime.now(UTC)
    async with open_postgres_store(postgres_url) as store:
        value = await declared(store, network)
        old = [ReportRow(value, f"old{i}", now - timedelta(weeks=3, minutes=i), now)
               for i in range(10)]
        new = [ReportRow(value, f"new{i}", now - timedelta(minutes=i), now) for i in range(5)]
        ancient = ReportRow(value, "ancient", now - timedelta(days=5000), now)
        await store.append_reports([*old, *new, ancient])
        old_week = partition_name(week_of(int(old[0].timestamp.timestamp() * 1e6)))
        assert old_week in tables(postgres_url)
        removed = await store.drop_reports_before(now - timedelta(weeks=2))
        assert removed == 11
        assert old_week not in tables(postgres_url)
        assert sorted(r.data for r in await store.history(value, limit=100)) == sorted(
            r.data for r in new)
        assert await store.stored_bytes(network) == summed(postgres_url)[network] == \
            usage_rows(postgres_url)[network]
        # a later reading of a dropped week gets a fresh partition
        await store.append_reports([ReportRow(value, "late", old[0].timestamp, now)])
        assert old_week in tables(postgres_url)


def end_connections(url: str, database: str) -> int:
    """What a restarted or failed-over server does to its clients: end every connection."""
    return len(sql(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()", database))


async def test_connections_ended_mid_run_fail_unacknowledged_and_writing_resumes(
        postgres_url, network):
    database = psycopg.conninfo.conninfo_to_dict(postgres_url)["dbname"]
    acked: list[str] = []
    failed: list[str] = []
    ended_at: list[int] = []  # how many were acknowledged when the connections ended
    resumed, running = trio.Event(), trio.Event()
    async with open_postgres_store(postgres_url) as store:
        value = await declared(store, network)

        async def produce() -> None:
            i = 0
            while not resumed.is_set():
                data = f"r{i}"
                i += 1
                try:
                    await store.append_reports([ReportRow(value, data, T0, T0)])
                except StorageError:
                    failed.append(data)  # a batch in flight when its connection ended
                    continue
                acked.append(data)
                if len(acked) >= 200:
                    running.set()
                if ended_at and len(acked) > ended_at[0] + 100:
                    resumed.set()  # written through new connections since

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(produce)
            with trio.fail_after(60):
                await running.wait()
                ended_at.append(len(acked))
                assert end_connections(postgres_url, database) >= 1
                await resumed.wait()
        stored = {r.data for r in await store.history(value, limit=100_000)}
    assert set(acked) <= stored  # every acknowledged report is there
    assert store.reconnects >= 1
    assert not set(acked) & set(failed)


async def test_an_unreachable_server_at_open_is_one_storage_error(tmp_path):
    url = f"postgresql://postgres@/db?host={tmp_path}&port=1"
    with pytest.raises(StorageError, match="cannot reach PostgreSQL"):
        async with open_postgres_store(url, connect_timeout=2):
            pass


async def test_an_erasure_on_one_node_leaves_no_reading_another_node_was_writing(
        postgres_url, network):
    """Two stores on one database (two gateway nodes): one keeps writing a network's
    readings while the other erases it; afterwards not one reading of it is left, and the
    writer's next reports fail instead of landing as orphans."""
    async with open_postgres_store(postgres_url) as a, open_postgres_store(
            postgres_url, reset_connections=False) as b:
        value = await declared(a, network)
        await b.append_reports([ReportRow(value, "cached", T0, T0)])  # b knows the state
        erasing = trio.Event()
        after_erasure: list[BaseException] = []

        async def keep_writing() -> None:
            i = 0
            while True:
                try:
                    await b.append_reports([ReportRow(value, f"r{i}", T0, T0)
                                            for _ in range(50)])
                except StorageError as exc:
                    if erasing.is_set():  # the states are gone: the erasure committed
                        after_erasure.append(exc)
                        return
                    raise
                i += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_writing)
            await b.wait_committed(await b.submit_reports([], network))
            erasing.set()
            assert await a.erase_network(network) is True
        assert after_erasure, "writing after the erasure failed"
    assert sql(postgres_url, "SELECT count(*) FROM state_log") == [(0,)]
    assert sql(postgres_url, "SELECT count(*) FROM network_usage") == [(0,)]


@pytest.mark.slow
async def test_a_server_stopped_and_started_again_fails_writes_then_writing_resumes(
        postgres_server, network):
    """PostgreSQL restarted under a running store (its own server: the session's stays up):
    writes fail while it is down, none acknowledged, and resume once it is back; a store
    closing while it is down does not wait out its backoff."""
    import tempfile
    from pathlib import Path

    from gateway.storage.postgres.local_server import LocalPostgres

    own = LocalPostgres(Path(tempfile.mkdtemp(prefix="fleetgate-pg-restart-"))).start()
    try:
        url = own.create_database("restart")
        async with open_postgres_store(url) as store:
            value = await declared(store, network)
            await store.append_reports([ReportRow(value, "before", T0, T0)])
            await trio.to_thread.run_sync(own.stop)
            with pytest.raises(StorageError):
                await store.append_reports([ReportRow(value, "while-down", T0, T0)])
            await trio.to_thread.run_sync(own.start)
            with trio.fail_after(60):  # the backoff is at most 5 s between tries
                while True:
                    try:
                        await store.append_reports([ReportRow(value, "after", T0, T0)])
                        break
                    except StorageError:
                        continue
            assert [r.data for r in await store.history(value)] == ["before", "after"]
            await trio.to_thread.run_sync(own.stop)
            queued = [await store.submit_reports([ReportRow(value, f"at-close-{i}", T0, T0)])
                      for i in range(3)]
        # closed while the server is down: what was queued failed, without backoff waits
        assert all(isinstance(t.error, StorageError) for t in queued)  # none acknowledged
        assert store.reconnects >= 1
    finally:
        own.remove()
