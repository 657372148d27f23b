"""POST /api/v1/values/{uuid}/control: validated, stored as a Control state, published
retained QoS 1 into the device's jail, and the answer says whether the device is online."""

from __future__ import annotations

import json
import uuid

from httphelpers import Device, seed_network, value_uuid


async def test_control_reaches_a_live_paho_device_and_is_stored(env, device_bundle):
    net = device_bundle.network_uuid
    tree = await seed_network(env.ingest, net, reports=0)
    device = Device(*env.mqtt, device_bundle)
    (_, rc) = await device.connect()
    assert rc == 0
    await device.subscribe("control/#", 1)
    target = value_uuid(tree, "target")
    answer = await env.operator().request("POST", f"/api/v1/values/{target}/control",
                                          {"data": 21.5})
    assert answer.status == 200, answer.body
    doc = answer.json
    assert doc["device_online"] is True and doc["network"] == str(net)
    assert doc["topic"] == "control/thermo/target" and doc["state"]["data"] == 21.5
    message = await device.message()
    assert message.topic == "control/thermo/target" and message.qos == 1
    payload = json.loads(message.payload)
    assert payload["data"] == "21.5" and payload["value"] == target
    await device.close()
    # Stored as a Control state with its own timestamp, and visible in the value document.
    value = (await env.operator().get(f"/api/v1/values/{target}")).json["value"]
    control = next(s for s in value["states"] if s["type"] == "Control")
    assert control["latest"]["data"] == 21.5
    assert control["latest"]["timestamp"] == doc["state"]["timestamp"]


async def test_control_for_an_offline_device_is_retained_for_its_next_subscribe(
        env, device_bundle):
    net = device_bundle.network_uuid
    tree = await seed_network(env.ingest, net, reports=0)
    label = value_uuid(tree, "label")
    answer = await env.operator().request("POST", f"/api/v1/values/{label}/control",
                                          {"data": "on"})
    assert answer.status == 200 and answer.json["device_online"] is False
    stored = await env.store.retained(net)
    assert [m.topic for m in stored] == ["control/thermo/label"]
    device = Device(*env.mqtt, device_bundle)
    await device.connect()
    await device.subscribe("control/thermo/+", 1)
    message = await device.message()
    assert message.retain and json.loads(message.payload)["data"] == "on"
    await device.close()


async def test_control_refusals_name_the_reason(env):
    net = uuid.uuid4()
    tree = await seed_network(env.ingest, net, reports=0)
    op = env.operator()
    target, temp = value_uuid(tree, "target"), value_uuid(tree, "temp")
    cases = [
        (target, {"data": 99}, 422, "range"),
        (target, {"data": 21.3}, 422, "step"),
        (target, {"data": "warm"}, 422, None),
        (temp, {"data": 20}, 409, "permission"),
        (str(uuid.uuid4()), {"data": 20}, 404, "not_found"),
        (target, {"value": 20}, 400, "bad_body"),
        (target, {"data": 20, "extra": 1}, 400, "bad_body"),
        (target, [20], 400, "bad_body"),
        (target, b"{not json", 400, "bad_json"),
    ]
    for value, body, status, code in cases:
        answer = await op.request("POST", f"/api/v1/values/{value}/control", body,
                                  headers={"content-type": "application/json"})
        assert answer.status == status, (body, answer.body)
        if code is not None:
            assert answer.error_code == code, (body, answer.body)
    wrong_type = await op.request("POST", f"/api/v1/values/{target}/control", b"data=1",
                                  headers={"content-type": "application/x-www-form-urlencoded"})
    assert wrong_type.status == 415
    # Nothing refused was stored.
    assert await env.store.history(uuid.UUID(target), kind="Control") == []


async def test_every_operator_action_is_one_log_line_with_who_what_and_result(env):
    net = uuid.uuid4()
    tree = await seed_network(env.ingest, net, reports=0)
    target = value_uuid(tree, "target")
    op = env.operator()
    assert (await op.request("POST", f"/api/v1/values/{target}/control",
                             {"data": 21.5})).status == 200
    assert (await op.request("POST", f"/api/v1/values/{target}/control",
                             {"data": 99})).status == 422
    assert (await env.client().request("POST", f"/api/v1/values/{target}/control",
                                       {"data": 20})).status == 401
    assert (await op.get(f"/api/v1/values/{target}")).status == 200  # reads are not actions
    actions = [json.loads(line) for line in env.log.getvalue().splitlines()
               if '"operator_action"' in line]
    assert [(a.get("operator"), a["action"], a["target"], a["status"]) for a in actions] == [
        ("test-operator", "control_value", target, 200),
        ("test-operator", "control_value", target, 422),
        (None, "control_value", target, 401),
    ]
