"""MQTT 5 devices against the whole gateway (real store, ingest, HTTP API, paho MQTTv5):
reports refused by validation are acknowledged with a reason code and a reason string (and
still explained on `errors`), and a control command with a correlation id is answered by the
device and shown by the API."""

from __future__ import annotations

import json

from httphelpers import MODEL, seed_network, value_uuid
from mqtt5client import Paho5, props
from paho.mqtt.packettypes import PacketTypes

WRITE_ONLY = {"name": "valve", "permission": "w", "number": {"min": 0, "max": 1, "step": 1}}


async def test_refused_reports_get_reason_codes_naming_the_rule_and_an_errors_message(
        env, device_bundle):
    model = {"devices": [{**MODEL["devices"][0],
                          "values": [*MODEL["devices"][0]["values"], WRITE_ONLY]}]}
    dev = Paho5(env.mqtt, device_bundle, "v5")
    await dev.connect()
    await dev.subscribe("errors", 1)
    await dev.subscribe("model/accepted", 1)
    rc, _ = await dev.publish("model", json.dumps(model).encode(), 1)
    assert rc == 0
    await dev.message()  # model/accepted: the values exist now

    cases = [
        ("report/thermo/temp", b"21.5", 0x00, None),
        ("report/thermo/temp", b'{"data": ', 0x99, "MALFORMED: "),
        ("report/thermo/temp", b"500", 0x83, "RANGE: "),
        ("report/thermo/temp", b"warm", 0x83, "TYPE: "),
        ("report/thermo/valve", b"1", 0x87, "PERMISSION: "),
        ("$SYS/x", b"1", 0x87, "publish_denied: "),
    ]
    for topic, payload, code, rule in cases:
        rc, p = await dev.publish(topic, payload, 1)
        assert rc == code, (topic, payload, rc)
        if rule is None:
            assert getattr(p, "ReasonString", None) is None
        else:
            assert p.ReasonString.startswith(rule), (topic, p.ReasonString)
    # Still explained on `errors`, as for a 3.1.1 device (one per refusal, in order).
    notes = [json.loads((await dev.message()).payload) for _ in range(5)]
    assert [n.get("topic") for n in notes] == [c[0] for c in cases[1:]]
    await dev.close()


async def test_a_correlated_control_command_is_answered_and_the_api_shows_the_answer(
        env, device_bundle):
    tree = await seed_network(env.ingest, device_bundle.network_uuid, reports=0)
    target = value_uuid(tree, "target")
    dev = Paho5(env.mqtt, device_bundle, "v5")
    await dev.connect()
    await dev.subscribe("control/#", 1)
    op = env.operator()
    sent = await op.request("POST", f"/api/v1/values/{target}/control",
                            {"data": 21.5, "correlation_id": "set-42"})
    assert sent.status == 200, sent.body
    assert (sent.json["correlation_id"], sent.json["response_topic"]) == (
        "set-42", "control/response")
    command = await dev.message()
    assert command.topic == "control/thermo/target"
    assert command.properties.ResponseTopic == "control/response"
    assert command.properties.CorrelationData == b"set-42"
    path = f"/api/v1/values/{target}/control?correlation_id=set-42"
    before = await op.get(path)
    assert before.status == 200 and before.json["response"] is None
    rc, _ = await dev.publish(command.properties.ResponseTopic, b"applied", 1,
                              properties=props(PacketTypes.PUBLISH, CorrelationData=b"set-42",
                                               ContentType="text/plain"))
    assert rc == 0
    after = (await op.get(path)).json
    assert after["response"]["payload"] == "applied"
    assert after["response"]["content_type"] == "text/plain"
    assert after["value"] == target and after["topic"] == "control/thermo/target"
    # Another value's path, an unknown id, or a bad one: not found / bad request.
    other = value_uuid(tree, "label")
    assert (await op.get(f"/api/v1/values/{other}/control?correlation_id=set-42")).status == 404
    assert (await op.get(f"/api/v1/values/{target}/control?correlation_id=x")).status == 404
    assert (await op.get(f"/api/v1/values/{target}/control")).status == 400
    bad = await op.request("POST", f"/api/v1/values/{target}/control",
                           {"data": 21.5, "correlation_id": "x" * 129})
    assert bad.status == 400
    await dev.close()


async def test_an_answer_from_another_network_is_not_tied_to_the_command(
        env, device_bundle, make_device):
    tree = await seed_network(env.ingest, device_bundle.network_uuid, reports=0)
    target = value_uuid(tree, "target")
    op = env.operator()
    assert (await op.request("POST", f"/api/v1/values/{target}/control",
                             {"data": 10, "correlation_id": "c-7"})).status == 200
    stranger = Paho5(env.mqtt, make_device(), "stranger")
    await stranger.connect()
    rc, _ = await stranger.publish("control/response", b"forged", 1, properties=props(
        PacketTypes.PUBLISH, CorrelationData=b"c-7"))
    assert rc == 0
    answer = (await op.get(f"/api/v1/values/{target}/control?correlation_id=c-7")).json
    assert answer["response"] is None
    await stranger.close()
