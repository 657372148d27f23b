"""Erasure: after `erase_network`, no row of that network remains in any table."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import timedelta

from storehelpers import T0, model_decl

from gateway.ingest import ReportRow
from gateway.storage import DB_NAME, EnqueuedMany, open_sqlite_store


async def populate(store, network) -> set[str]:
    """Put one of everything in the store for `network`; return every UUID it owns."""
    tree = await store.declare_model(network, model_decl(), T0)
    temp, target, _ = tree.devices[0].values
    await store.append_reports([ReportRow(temp.uuid, f"{i}", T0 + timedelta(seconds=i), T0)
                                for i in range(50)])
    await store.append_control(target.uuid, "20", T0)
    await store.connected(network, "dev", "0ABC", T0)
    await store.disconnected(network, "dev", "CONNECTION_LOST", T0)
    await store.set_retained(network, "model/accepted", b"tree", 1, T0)
    await store.save_session(network, "dev", [("control/#", 1)], T0)
    await store.enqueue(network, "dev", [("control/thermo/target", b"20", 1, True)], T0)
    # One message stored once for two sessions (a payload row, two references).
    await store.save_session(network, "dev2", [("control/#", 1)], T0)
    await store.wait_committed(await store.submit_session_changes(
        [EnqueuedMany(network, "control/thermo/x", b"shared", False, (("dev", 1), ("dev2", 1)))],
        T0))
    owned = {str(network)}
    for d in tree.devices:
        owned.add(str(d.uuid))
        for v in d.values:
            owned.add(str(v.uuid))
            owned.update(str(s.uuid) for s in v.states)
    return owned


def dump(path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(path)
    tables = [t for (t,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    out = {t: conn.execute(f"SELECT * FROM {t}").fetchall() for t in tables}
    conn.close()
    return out


async def test_erasing_a_network_leaves_no_row_of_it_in_any_table(tmp_path):
    gone, kept = uuid.uuid4(), uuid.uuid4()
    async with open_sqlite_store(tmp_path) as store:
        gone_uuids = await populate(store, gone)
        await populate(store, kept)
        before = dump(tmp_path / DB_NAME)
        assert all(rows for rows in before.values()), "every table holds data before"
        assert await store.erase_network(gone) is True
        after = dump(tmp_path / DB_NAME)
        for table, rows in after.items():
            # the other network's rows are all still there ...
            assert len(rows) * 2 == len(before[table]), table
            # ... and nothing names an erased UUID
            for r in rows:
                assert not gone_uuids & {str(c) for c in r}, (table, r)
        # what is left is exactly the other network, by id as well as by UUID
        kept_id = [r for r in after["networks"] if r[1] == str(kept)][0][0]
        for table, rows in after.items():
            conn = sqlite3.connect(tmp_path / DB_NAME)
            cols = [c[1] for c in conn.execute(f"PRAGMA table_info({table})")]
            conn.close()
            if "network_id" in cols:
                assert {r[cols.index("network_id")] for r in rows} == {kept_id}, table
        assert await store.get_tree(gone) is None
        assert await store.connection_status(gone) is None
        assert await store.retained(gone) == [] and await store.load_sessions(gone) == []
        assert await store.erase_network(gone) is False  # already gone
        assert (await store.get_tree(kept)).devices


async def test_erased_content_is_not_left_in_the_file(tmp_path):
    network = uuid.uuid4()
    secret = "needle-" + uuid.uuid4().hex
    async with open_sqlite_store(tmp_path) as store:
        tree = await store.declare_model(network, model_decl(), T0)
        door = tree.devices[1].values[0].uuid
        await store.append_reports([ReportRow(door, secret[:8], T0, T0)])
        await store.set_retained(network, "note", secret.encode(), 1, T0)
        await store.erase_network(network)
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert secret.encode() not in data and str(network).encode() not in data
