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
        assert all(rows for t, rows in before.items() if t != "audit"), "every table holds data"
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


async def write_payloads(store, network, tag: str, count: int = 120) -> list[bytes]:
    """Store `count` distinct payloads of `network` as reports, retained and queued messages."""
    tree = await store.declare_model(network, model_decl(), T0)
    temp = tree.devices[0].values[0].uuid
    needles = [f"{tag}-{i:04d}-{uuid.uuid4().hex}".encode() for i in range(count)]
    third = count // 3
    await store.append_reports([ReportRow(temp, n.decode(), T0 + timedelta(seconds=i), T0)
                                for i, n in enumerate(needles[:third])])
    for i, n in enumerate(needles[third:2 * third]):
        await store.set_retained(network, f"note/{tag}/{i}", n, 1, T0)
    await store.enqueue(network, "dev", [(f"control/{tag}/{i}", n, 1, False)
                                         for i, n in enumerate(needles[2 * third:])], T0)
    return needles


def raw_bytes(folder) -> bytes:
    """The database, its WAL and its -shm file, read as they are on disk."""
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())


async def test_a_second_erasure_leaves_no_payload_in_the_database_wal_or_shm(tmp_path):
    first, second, kept = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with open_sqlite_store(tmp_path) as store:
        kept_needles = await write_payloads(store, kept, "kept")
        first_needles = await write_payloads(store, first, "first")
        assert await store.erase_network(first) is True
        # written between the erasures: once secure delete was switched off after the first
        # erasure, these survived the second one in freed pages
        second_needles = await write_payloads(store, second, "second")
        kept_needles += await write_payloads(store, kept, "kept-later")
        assert await store.erase_network(second) is True
        kept_needles += await write_payloads(store, kept, "kept-last")  # and after
        open_files = raw_bytes(tmp_path)
    closed_files = raw_bytes(tmp_path)
    for data in (open_files, closed_files):
        left = [n for n in first_needles + second_needles if n in data]
        assert left == [], f"{len(left)} erased payloads still on disk, e.g. {left[:2]}"
    # the scan can see payloads: every kept one is in the files once the store is closed
    assert all(n in closed_files for n in kept_needles)
