"""`Ingest.handle`: the seam the gateway calls, over a real SQLite store."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from gateway.ingest import Ingest, Limits, ReadingRejected, RejectCode, Reply, StateKind
from gateway.storage import open_sqlite_store

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
MODEL = {"devices": [{"name": "thermo", "values": [
    {"name": "temp", "permission": "r", "number": {"min": -40, "max": 125, "step": 0.5}},
    {"name": "target", "permission": "rw", "number": {"min": 5, "max": 30, "step": 0.5}},
    {"name": "firmware", "permission": "w", "blob": {"max": 100}},
    {"name": "label", "permission": "r", "string": {"max": 4}},
]}]}


@pytest.fixture
async def ingest(tmp_path):
    async with open_sqlite_store(tmp_path) as store:
        yield Ingest(store)


def assemble(replies: list[Reply]) -> dict:
    """The tree a device learns from the answers to its declaration: the summary (last) and
    the piece of every device it declared, each retained QoS 1."""
    *pieces, summary = replies
    assert summary.topic == "model/accepted" and summary.qos == 1 and summary.retain
    network = json.loads(summary.payload)["network"]
    by_name = {}
    for piece in pieces:
        assert piece.topic.startswith("model/accepted/") and piece.qos == 1 and piece.retain
        doc = json.loads(piece.payload)
        assert doc["network"] == network["uuid"]
        assert piece.topic == f"model/accepted/{doc['device']['name']}"
        by_name[doc["device"]["name"]] = doc["device"]
    for device in network["devices"]:
        if device["name"] in by_name:
            piece = by_name[device["name"]]
            assert piece["uuid"] == device["uuid"] and len(piece["values"]) == device["values"]
    return {"uuid": network["uuid"], "summary": network["devices"],
            "devices": [by_name[d["name"]] for d in network["devices"] if d["name"] in by_name]}


async def declare(ingest, network, doc=MODEL) -> dict:
    return assemble(await ingest.handle(network, "c", "model", json.dumps(doc).encode(), 1,
                                        NOW))


def errors_of(replies: list[Reply]) -> dict:
    (reply,) = replies
    assert reply.topic == "errors" and not reply.retain
    return json.loads(reply.payload)


async def history(ingest, value_uuid: str) -> list[str]:
    return [r.data for r in await ingest._store.history(uuid.UUID(value_uuid))]


async def test_model_accepted_maps_every_declared_name_to_its_uuid(ingest):
    network = uuid.uuid4()
    tree = await declare(ingest, network)
    assert tree["uuid"] == str(network)
    (dev,) = tree["devices"]
    assert dev["name"] == "thermo" and uuid.UUID(dev["uuid"]).version == 4
    assert [v["name"] for v in dev["values"]] == [v["name"] for v in MODEL["devices"][0]["values"]]
    temp = dev["values"][0]
    assert uuid.UUID(temp["uuid"]).version == 4
    assert [s["type"] for s in temp["states"]] == ["Report"]
    assert [s["type"] for s in dev["values"][1]["states"]] == ["Report", "Control"]
    # a second declaration adding a device: the summary lists both (same UUIDs), and only
    # the device it named gets a new piece (the other's retained piece stands)
    lamp = {"devices": [{"name": "lamp", "values": []}]}
    again = await declare(ingest, network, lamp)
    assert [(d["name"], d["uuid"]) for d in again["summary"]] == [
        ("thermo", dev["uuid"]), ("lamp", again["devices"][0]["uuid"])]
    assert [d["name"] for d in again["devices"]] == ["lamp"]


async def test_the_largest_declaration_gets_answers_each_under_the_packet_limit(ingest):
    network = uuid.uuid4()
    name = "\U0001f600" * 64  # the longest names, 4 UTF-8 bytes a character
    devices = [{"name": f"{d:02d}" + name[2:], "description": "d" * 1024, "values": [
        {"name": f"{v:03d}" + name[3:], "permission": "rw", "description": "v" * 1024,
         "string": {"max": 64}} for v in range(256)]} for d in range(16)]
    devices += [{"name": f"{d:03d}" + name[3:], "values": []} for d in range(16, 256)]
    payload = json.dumps({"devices": devices}, ensure_ascii=False).encode()
    assert len(payload) > 256 * 1024  # the declaration itself must fit the limits ...
    # (it may, over several publishes: declaring is additive)
    ingest = Ingest(ingest._store, limits=Limits(max_model_bytes=16 * 1024 * 1024))
    replies = await ingest.handle(network, "c", "model", payload, 1, NOW)
    assert len(replies) == 257
    for reply in replies:  # ... its answers each fit the gateway's packet limit
        topic = f"{network}/{reply.topic}".encode()
        assert 2 + len(topic) + 2 + len(reply.payload) + 5 < 256 * 1024, reply.topic
    tree = assemble(replies)
    assert sum(len(d["values"]) for d in tree["devices"]) == 4096
    assert {d["name"] for d in tree["devices"]} == {d["name"] for d in devices}


async def test_model_rejected_lists_the_reasons_and_stores_nothing(ingest):
    network = uuid.uuid4()
    bad = {"devices": [{"name": "x", "values": [{"name": "v", "permission": "z"}]}]}
    (reply,) = await ingest.handle(network, "c", "model", json.dumps(bad).encode(), 1, NOW)
    assert reply.topic == "model/rejected" and not reply.retain
    assert len(json.loads(reply.payload)["reasons"]) == 2
    assert await ingest._store.get_tree(network) is None
    assert ingest.statistics().models_rejected == 1


async def test_reports_by_name_and_by_uuid_are_stored_and_answered_with_nothing(ingest):
    network = uuid.uuid4()
    temp = (await declare(ingest, network))["devices"][0]["values"][0]["uuid"]
    assert await ingest.handle(network, "c", "report/thermo/temp", b"21.5", 1, NOW) == []
    assert await ingest.handle(network, "c", f"report/{temp}",
                               b'{"data": 22, "timestamp": "2026-11-26T08:59:00Z"}', 1, NOW) == []
    records = await ingest._store.history(uuid.UUID(temp))
    assert [(r.data, r.timestamp, r.received) for r in records] == [
        ("22", NOW - timedelta(minutes=1), NOW), ("21.5", NOW, NOW)]


async def test_a_batch_stores_the_good_readings_and_names_the_bad_ones(ingest):
    network = uuid.uuid4()
    temp = (await declare(ingest, network))["devices"][0]["values"][0]["uuid"]
    batch = {"reports": [{"data": 1, "timestamp": f"2026-11-26T08:0{i}:00Z"} for i in range(5)]
             + [{"data": 1000}, {"data": "0.2"}, {"nope": 1}]}
    replies = await ingest.handle(network, "c", "report/thermo/temp",
                                  json.dumps(batch).encode(), 1, NOW)
    doc = errors_of(replies)
    assert doc["topic"] == "report/thermo/temp"
    assert [(e["index"], e["code"]) for e in doc["errors"]] == [
        (5, "RANGE"), (6, "STEP"), (7, "MALFORMED")]
    assert await history(ingest, temp) == ["1"] * 5
    assert ingest.statistics().rejected == {"RANGE": 1, "STEP": 1, "MALFORMED": 1}


@pytest.mark.parametrize("topic, payload, code", [
    ("report/thermo/firmware", b"AAAA", "PERMISSION"),  # write-only value
    ("report/thermo/nope", b"1", "UNKNOWN_VALUE"),
    ("report/ghost/temp", b"1", "UNKNOWN_VALUE"),
    (f"report/{uuid.uuid4()}", b"1", "UNKNOWN_VALUE"),
    ("report/thermo", b"1", "UNKNOWN_TOPIC"),
    ("report/thermo/temp", b"hot", "TYPE"),
    ("report/thermo/temp", b"-41", "RANGE"),
    ("report/thermo/label", b"too long", "SIZE"),
    ("report/thermo/temp", b"\xff", "MALFORMED"),
    ("report/thermo/temp", b'{"data": 1, "timestamp": "now"}', "MALFORMED"),
])
async def test_refused_reports_go_to_errors_and_are_not_stored(ingest, topic, payload, code):
    network = uuid.uuid4()
    tree = await declare(ingest, network)
    doc = errors_of(await ingest.handle(network, "c", topic, payload, 1, NOW))
    assert doc == {"topic": topic, "errors": [{"code": code, "reason": doc["errors"][0]["reason"]}]}
    for v in tree["devices"][0]["values"]:
        assert await history(ingest, v["uuid"]) == []
    assert ingest.statistics().rejected == {code: 1}


async def test_reports_before_any_model_are_unknown_values(ingest):
    doc = errors_of(await ingest.handle(uuid.uuid4(), "c", "report/a/b", b"1", 1, NOW))
    assert doc["errors"][0]["code"] == "UNKNOWN_VALUE"


async def test_a_value_declared_in_one_network_is_unknown_in_another(ingest):
    a, b = uuid.uuid4(), uuid.uuid4()
    temp = (await declare(ingest, a))["devices"][0]["values"][0]["uuid"]
    for topic in ("report/thermo/temp", f"report/{temp}"):
        doc = errors_of(await ingest.handle(b, "c", topic, b"1", 1, NOW))
        assert doc["errors"][0]["code"] == "UNKNOWN_VALUE"
    assert await history(ingest, temp) == []


async def test_other_topics_are_not_ingests_business(ingest):
    network = uuid.uuid4()
    await declare(ingest, network)
    for topic in ("chat/x", "control/thermo/target", "model/accepted", "errors"):
        assert await ingest.handle(network, "c", topic, b"anything", 1, NOW) == []


async def test_declarations_survive_a_restart_and_a_new_ingest_reads_them(tmp_path):
    network = uuid.uuid4()
    async with open_sqlite_store(tmp_path) as store:
        first = await declare(Ingest(store), network)
    async with open_sqlite_store(tmp_path) as store:
        ingest = Ingest(store)  # cold cache: reads the tree from the store
        assert await ingest.handle(network, "c", "report/thermo/temp", b"1", 1, NOW) == []
        assert await declare(ingest, network) == first
        assert await history(ingest, first["devices"][0]["values"][0]["uuid"]) == ["1"]


async def test_qos0_reports_are_queued_and_stored_without_waiting(tmp_path):
    network = uuid.uuid4()
    async with open_sqlite_store(tmp_path) as store:
        ingest = Ingest(store)
        temp = (await declare(ingest, network))["devices"][0]["values"][0]["uuid"]
        for _ in range(20):
            pending = await ingest.submit(network, "c", "report/thermo/temp", b"1", 0, NOW)
            assert not pending.must_wait  # nothing to wait for at QoS 0
    async with open_sqlite_store(tmp_path) as store:
        assert len(await store.history(uuid.UUID(temp))) == 20


async def test_control_is_validated_stored_and_returned_as_a_retained_qos1_reply(ingest):
    network = uuid.uuid4()
    values = (await declare(ingest, network))["devices"][0]["values"]
    target, temp = uuid.UUID(values[1]["uuid"]), uuid.UUID(values[0]["uuid"])
    net, reply = await ingest.control(target, "21.5", NOW)
    assert net == network
    assert (reply.topic, reply.qos, reply.retain) == ("control/thermo/target", 1, True)
    assert json.loads(reply.payload) == {"data": "21.5", "timestamp": "2026-11-26T09:00:00.000000Z",
                                         "value": str(target)}
    (record,) = await ingest._store.history(target, kind=StateKind.CONTROL)
    assert record.data == "21.5"
    for value, data, code in ((temp, "1", RejectCode.PERMISSION),
                              (target, "31", RejectCode.RANGE),
                              (target, True, RejectCode.TYPE),
                              (uuid.uuid4(), "1", RejectCode.UNKNOWN_VALUE)):
        with pytest.raises(ReadingRejected) as info:
            await ingest.control(value, data, NOW)
        assert info.value.code is code
    assert len(await ingest._store.history(target, kind=StateKind.CONTROL)) == 1


async def test_submit_many_stores_a_chunk_of_publishes_as_one_operation_in_order(ingest):
    network = uuid.uuid4()
    store = ingest._store
    messages = [("report/thermo/temp", b"1", 1),  # before the model: unknown yet
                ("model", json.dumps(MODEL).encode(), 1)]
    messages += [("report/thermo/temp", str(i).encode(), 1) for i in range(10)]
    messages += [("report/thermo/temp", b"hot", 1), ("chat", b"x", 0),
                 ("report/thermo/label", b"ok", 0)]
    before = store.statistics().operations
    pending = await ingest.submit_many(network, "c", messages, NOW)
    assert pending.must_wait
    replies = await pending.wait()
    assert [r.topic for r in replies] == [
        "errors", "model/accepted/thermo", "model/accepted", "errors"]
    assert json.loads(replies[0].payload)["errors"][0]["code"] == "UNKNOWN_VALUE"
    assert json.loads(replies[3].payload)["errors"][0]["code"] == "TYPE"
    # the model is one operation, the 11 accepted reports of ten publishes one more
    assert store.statistics().operations - before == 2
    tree = json.loads(replies[1].payload)["device"]["values"]
    assert await history(ingest, tree[0]["uuid"]) == [str(i) for i in range(10)]
    assert await history(ingest, tree[3]["uuid"]) == ["ok"]


async def test_a_chunk_of_only_qos0_reports_needs_no_wait(ingest):
    network = uuid.uuid4()
    await declare(ingest, network)
    pending = await ingest.submit_many(network, "c", [("report/thermo/temp", b"1", 0)] * 3, NOW)
    assert not pending.must_wait and await pending.wait() == []


async def test_the_tree_cache_is_bounded_by_values_and_refills_from_the_store(tmp_path):
    async with open_sqlite_store(tmp_path) as store:
        ingest = Ingest(store, cached_values=8)  # two networks of four values
        nets = [uuid.uuid4() for _ in range(3)]
        for n in nets:
            await declare(ingest, n)
        assert list(ingest._cache) == nets[1:]  # the oldest was evicted
        for n in nets:  # ... and every network still works, reloading from the store
            assert await ingest.handle(n, "c", "report/thermo/temp", b"1", 1, NOW) == []
        assert ingest._cache_values <= 8


async def test_erasing_through_ingest_forgets_the_tree(ingest):
    network = uuid.uuid4()
    await declare(ingest, network)
    assert await ingest.erase_network(network) is True
    doc = errors_of(await ingest.handle(network, "c", "report/thermo/temp", b"1", 1, NOW))
    assert doc["errors"][0]["code"] == "UNKNOWN_VALUE"
    assert await ingest.erase_network(network) is False
