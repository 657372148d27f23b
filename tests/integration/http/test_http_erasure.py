"""DELETE /api/v1/networks/{uuid}: every row of the network gone (every table scanned), its
live session closed, its identity barred until an operator lifts the bar; others untouched."""

from __future__ import annotations

import sqlite3
import uuid

from httphelpers import Device, seed_network

from gateway.storage import DB_NAME

ID_COLUMNS = {"network_id": "networks", "device_id": "devices", "value_id": "value_nodes",
              "state_id": "states"}


def _network_ids(db, network: uuid.UUID) -> tuple[dict[str, set[int]], set[str]]:
    """The integer ids and UUIDs of every node of `network` (before erasure)."""
    ids: dict[str, set[int]] = {}
    (nid,) = db.execute("SELECT id FROM networks WHERE uuid = ?", (str(network),)).fetchone()
    ids["networks"] = {nid}
    ids["devices"] = {r[0] for r in db.execute(
        "SELECT id FROM devices WHERE network_id = ?", (nid,))}
    ids["value_nodes"] = {r[0] for r in db.execute(
        "SELECT id FROM value_nodes WHERE network_id = ?", (nid,))}
    ids["states"] = {r[0] for r in db.execute(
        "SELECT id FROM states WHERE network_id = ?", (nid,))}
    uuids = {str(network)}
    for table in ("devices", "value_nodes", "states"):
        uuids |= {r[0] for r in db.execute(
            f"SELECT uuid FROM {table} WHERE id IN ({','.join('?' * len(ids[table]))})",
            tuple(ids[table]))}
    return ids, uuids


def _rows_of(db, ids: dict[str, set[int]], uuids: set[str]) -> dict[str, int]:
    """Per table, the rows that name the network: by id column, by own id, or by any UUID
    (or payload bytes) mentioning it."""
    found: dict[str, int] = {}
    tables = [r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    assert {"networks", "state_log", "connection_log", "retained", "queued_refs",
            "queued_messages"} <= set(tables)
    for table in tables:
        if table == "audit":  # keeps the record that the network was erased (by design)
            continue
        cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
        n = 0
        for row in db.execute(f"SELECT * FROM {table}"):
            for col, cell in zip(cols, row, strict=True):
                if col in ID_COLUMNS and cell in ids[ID_COLUMNS[col]]:
                    n += 1
                    break
                if col == "id" and table in ids and cell in ids[table]:
                    n += 1
                    break
                text = cell.decode("latin-1") if isinstance(cell, bytes) else str(cell)
                if any(u in text for u in uuids):
                    n += 1
                    break
        found[table] = n
    return found


async def test_erasure_leaves_no_row_closes_the_session_and_bars_the_identity(
        env, make_device):
    victim = make_device()
    other = make_device()
    net = victim.network_uuid
    await seed_network(env.ingest, net, reports=30)
    await seed_network(env.ingest, other.network_uuid, reports=30)
    device = Device(*env.mqtt, victim, client_id="persist")
    (_, rc) = await device.connect()
    assert rc == 0
    await device.subscribe("control/#", 1)
    await env.store.set_retained(net, "hello", b"x", 1, env.store_now())
    await env.store.save_session(net, "offline", [("a/#", 1)], env.store_now())
    await env.store.enqueue(net, "offline", [("a/b", f"{net}".encode(), 1, False)],
                            env.store_now())
    op = env.operator()
    target = (await op.get(f"/api/v1/networks/{net}")).json["network"]["devices"][0]
    target_value = next(v["uuid"] for v in target["values"] if v["name"] == "target")
    assert (await op.request("POST", f"/api/v1/values/{target_value}/control",
                             {"data": 20})).status == 200

    db = sqlite3.connect(env.data / DB_NAME)
    ids, uuids = _network_ids(db, net)
    before = _rows_of(db, ids, uuids)
    assert before["state_log"] >= 31 and before["connection_status"] == 1
    assert before["retained"] >= 2 and before["queued_refs"] == 1
    assert before["queued_messages"] == 1
    other_ids, other_uuids = _network_ids(db, other.network_uuid)
    others_before = _rows_of(db, other_ids, other_uuids)

    answer = await op.request("DELETE", f"/api/v1/networks/{net}")
    assert answer.status == 200, answer.body
    doc = answer.json
    assert doc["erased"] is True and doc["barred"] is True and doc["sessions_closed"] == 1
    assert f"fleet-ca revoke {net}" in doc["next_step"]
    assert await device.wait_disconnected()

    after = _rows_of(db, ids, uuids)
    assert after == dict.fromkeys(after, 0), after
    assert db.execute("SELECT action FROM audit WHERE subject = ?", (str(net),)).fetchall() \
        == [("erase",)]
    assert _rows_of(db, other_ids, other_uuids) == others_before
    assert (await op.get(f"/api/v1/networks/{net}")).status == 404
    assert (await op.get(f"/api/v1/values/{target_value}")).status == 404

    # Barred: the same certificate cannot connect again (until the bar is lifted).
    again = Device(*env.mqtt, victim, client_id="again")
    (_, rc) = await again.connect()
    assert rc == "Not authorized"  # CONNACK 0x05 after the handshake: the device reads why
    assert await again.wait_disconnected()
    await again.close()
    assert (await op.get("/api/v1/bars")).json["barred"][0]["network"] == str(net)
    assert (await op.request("DELETE", f"/api/v1/bars/{net}")).status == 200
    assert (await op.request("DELETE", f"/api/v1/bars/{net}")).status == 404
    back = Device(*env.mqtt, victim, client_id="back")
    (_, rc) = await back.connect()
    assert rc == 0
    await back.close()
    db.close()


async def test_erasing_an_unknown_network_is_404_and_bars_nothing(env):
    net = uuid.uuid4()
    answer = await env.operator().request("DELETE", f"/api/v1/networks/{net}")
    assert answer.status == 404 and answer.error_code == "not_found"
    assert net not in env.bars


async def test_the_bar_list_survives_a_restart(env, tmp_path):
    from datetime import UTC, datetime

    from gateway.http import BarList
    net = uuid.uuid4()
    env.bars.bar(net, "op", datetime.now(UTC))
    assert net in BarList(env.data / "barred.json")
    assert oct((env.data / "barred.json").stat().st_mode & 0o777) == "0o600"
