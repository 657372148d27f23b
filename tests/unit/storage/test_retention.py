"""Retention (`Store.drop_reports_before`) on both stores, and the SQLite store's bounded steps."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime, timedelta

from storehelpers import T0, model_decl

from gateway.ingest import ReportRow
from gateway.model.tree import StateKind
from gateway.storage import DB_NAME, open_sqlite_store
from gateway.storage.sqlite.ops import ROW_OVERHEAD
from gateway.storage.sqlite.retention import DropHistoryStep

NOW = datetime.now(UTC)


def cost(*data: str) -> int:
    return sum(len(d.encode()) + ROW_OVERHEAD for d in data)


async def test_history_before_the_cutoff_goes_and_stored_bytes_follow(store, network):
    other = uuid.uuid4()
    values = {}
    for net in (network, other):
        tree = await store.declare_model(net, model_decl(), NOW)
        values[net] = tree.devices[0].values
    temp, target = values[network][0].uuid, values[network][1].uuid
    # Weeks apart, so PostgreSQL's week partitions fall wholly on either side of the cutoff.
    old = [ReportRow(temp, f"{i}", NOW - timedelta(days=30, minutes=i), NOW) for i in range(4)]
    new = [ReportRow(temp, "22.5", NOW - timedelta(hours=1), NOW)]
    await store.append_reports([*old, *new], network)
    await store.append_control(target, "19", NOW - timedelta(days=25))  # an old command
    await store.append_control(target, "21", NOW)
    kept_elsewhere = [ReportRow(values[other][0].uuid, "1", NOW, NOW)]
    await store.append_reports(kept_elsewhere, other)

    removed = await store.drop_reports_before(NOW - timedelta(days=14))

    assert removed == 5
    assert [r.data for r in await store.history(temp, limit=100)] == ["22.5"]
    assert [r.data for r in await store.history(target, kind=StateKind.CONTROL)] == ["21"]
    assert await store.stored_bytes(network) == cost("22.5", "21")
    assert await store.stored_bytes(other) == cost("1")
    assert await store.drop_reports_before(NOW - timedelta(days=14)) == 0  # nothing left


async def test_sqlite_steps_are_bounded_and_resume_where_they_stopped(tmp_path):
    net = uuid.uuid4()
    async with open_sqlite_store(tmp_path) as store:
        tree = await store.declare_model(net, model_decl(), T0)
        temp, door = tree.devices[0].values[0].uuid, tree.devices[1].values[0].uuid
        await store.append_reports(
            [ReportRow(temp, str(i), T0 - timedelta(days=9, seconds=i), T0) for i in range(7)]
            + [ReportRow(door, "open", T0 - timedelta(days=9), T0),
               ReportRow(door, "shut", T0, T0)], net)
        cutoff = (T0 - timedelta(days=1) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
            microseconds=1)
        steps = []
        resume: int | None = 0
        while resume is not None:
            removed, resume = await store._write(DropHistoryStep(cutoff, resume, max_rows=3,
                                                                 max_states=2))
            steps.append(removed)
        assert max(steps) <= 3 and sum(steps) == 8  # 7 of temp (one state, 3 steps), 1 of door
        assert [r.data for r in await store.history(door)] == ["shut"]
        assert await store.history(temp) == []
        assert await store.stored_bytes(net) == cost("shut")
    conn = sqlite3.connect(tmp_path / DB_NAME)
    try:  # the usage row agrees with a full sum of what is left
        assert conn.execute("SELECT stored_bytes FROM network_usage").fetchall() == [
            (cost("shut"),)]
    finally:
        conn.close()
