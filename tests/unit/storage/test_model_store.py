"""Declarations in the store: UUIDs on every layer, stable forever, metadata updated in place."""

from __future__ import annotations

import os
import sqlite3
import stat
import uuid

import pytest
from storehelpers import MODEL, T0, model_decl

from gateway.ingest import DeclarationRejected, Limits, StateKind
from gateway.storage import DB_NAME, SchemaError, StorageError, open_sqlite_store


def uuids_of(tree) -> dict[str, uuid.UUID]:
    out = {}
    for d in tree.devices:
        out[d.name] = d.uuid
        for v in d.values:
            out[f"{d.name}/{v.name}"] = v.uuid
            for s in v.states:
                out[f"{d.name}/{v.name}/{s.kind}"] = s.uuid
    return out


async def test_declaring_gives_every_node_a_uuid4_and_states_per_permission(store, network):
    tree = await store.declare_model(network, model_decl(), T0)
    assert tree.uuid == network
    ids = uuids_of(tree)
    assert all(u.version == 4 for u in ids.values())
    assert len(set(ids.values())) == len(ids)
    thermo = tree.devices[0]
    temp, target, firmware = thermo.values
    assert [s.kind for s in temp.states] == [StateKind.REPORT]
    assert [s.kind for s in target.states] == [StateKind.REPORT, StateKind.CONTROL]
    assert [s.kind for s in firmware.states] == [StateKind.CONTROL]
    assert thermo.description == "kitchen" and temp.decl == model_decl().devices[0].values[0]
    assert await store.get_tree(network) == tree


async def test_declaring_again_after_reopening_returns_the_same_uuids(open_store, network):
    async with open_store() as store:
        first = uuids_of(await store.declare_model(network, model_decl(), T0))
    for _ in range(2):
        async with open_store() as store:
            again = await store.declare_model(network, model_decl(), T0)
            assert uuids_of(again) == first
            assert uuids_of(await store.get_tree(network)) == first


async def test_changed_metadata_updates_the_node_and_keeps_its_uuid(store, network):
    before = uuids_of(await store.declare_model(network, model_decl(), T0))
    changed = {"devices": [{"name": "thermo", "description": "hall", "values": [
        {"name": "temp", "permission": "rw", "number": {"min": -50, "max": 150, "unit": "C"}},
    ]}]}
    tree = await store.declare_model(network, model_decl(changed), T0)
    after = uuids_of(tree)
    for key in ("thermo", "thermo/temp", "thermo/temp/Report", "door", "door/state"):
        assert after[key] == before[key]
    assert "thermo/temp/Control" in after  # rw now: a Control state was added
    temp = tree.devices[0].values[0]
    assert temp.decl.type.unit == "C" and tree.devices[0].description == "hall"
    assert [d.name for d in tree.devices] == ["thermo", "door"]  # undeclared ones stay


async def test_the_same_names_in_two_networks_get_different_uuids(store):
    a = uuids_of(await store.declare_model(uuid.uuid4(), model_decl(), T0))
    b = uuids_of(await store.declare_model(uuid.uuid4(), model_decl(), T0))
    assert not set(a.values()) & set(b.values())


async def test_network_caps_count_what_is_already_stored(store, network):
    limits = Limits(max_devices_per_network=2, max_values_per_network=5)
    await store.declare_model(network, model_decl(), T0, limits)
    more = {"devices": [{"name": "lamp", "values": []}]}
    with pytest.raises(DeclarationRejected, match="3 devices; the limit is 2"):
        await store.declare_model(network, model_decl(more), T0, limits)
    more_values = {"devices": [{"name": "door", "values": [
        {"name": f"v{i}", "permission": "r", "string": {"max": 1}} for i in range(2)]}]}
    with pytest.raises(DeclarationRejected, match="6 values; the limit is 5"):
        await store.declare_model(network, model_decl(more_values), T0, limits)
    assert uuids_of(await store.get_tree(network)).keys() == uuids_of(
        await store.declare_model(network, model_decl(), T0, limits)).keys()


async def test_an_unknown_network_has_no_tree(store):
    assert await store.get_tree(uuid.uuid4()) is None


async def test_the_database_file_is_private_and_in_wal_mode(tmp_path):
    async with open_sqlite_store(tmp_path / "d") as store:
        await store.declare_model(uuid.uuid4(), model_decl(), T0)
        path = tmp_path / "d" / DB_NAME
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o700
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()


async def test_a_database_from_a_newer_fleetgate_is_refused(tmp_path):
    async with open_sqlite_store(tmp_path):
        pass
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(SchemaError, match="newer"):
        async with open_sqlite_store(tmp_path):
            pass


async def test_a_file_that_is_not_a_database_is_a_storage_error(tmp_path):
    (tmp_path / DB_NAME).write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(StorageError):
        async with open_sqlite_store(tmp_path):
            pass


def test_the_migrations_are_numbered_from_one_without_gaps():
    from gateway.storage.sqlite.schema import MIGRATIONS
    assert [n for n, _ in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert MODEL["devices"]  # the fixture model is non-trivial


async def test_a_data_folder_that_cannot_be_created_is_one_storage_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StorageError, match="cannot create .*file/data"):
        async with open_sqlite_store(tmp_path / "file" / "data"):
            pass
