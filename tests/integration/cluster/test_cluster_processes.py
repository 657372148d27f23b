"""Two real `fleet-gateway serve --store postgresql://...` nodes on one PostgreSQL, with real
paho devices: a control sent through node A's API reaches the device on node B, a
persistent session moves from A to B with the QoS 1 messages queued for it on A, and an
erasure through A cuts the device on B."""

from __future__ import annotations

import json

import pytest
import trio
from processes import Device, NodeProcess, api

MODEL = {"devices": [{"name": "thermo", "values": [
    {"name": "target", "permission": "rw", "number": {"min": 5, "max": 30, "step": 0.5}}]}]}


@pytest.fixture
def nodes(ca_home, postgres_url):
    started = [NodeProcess(ca_home.path, postgres_url, name) for name in ("a", "b")]
    for node in started:
        node.line("cluster_joined")
    yield started
    for node in started:
        if node.proc.poll() is None:
            node.proc.kill()
        node.proc.wait()


async def test_control_through_node_a_reaches_the_device_on_node_b(nodes, ca_home,
                                                                   make_device):
    a, b = nodes
    bundle = make_device()
    device = Device(bundle, b.address("mqtt")[1], "thermo")

    def on_b() -> None:
        assert device.connect()[1] == 0
        device.subscribe("control/#", 1)
        device.publish("model", json.dumps(MODEL).encode())  # acknowledged once stored

    await trio.to_thread.run_sync(on_b)
    status, doc = await trio.to_thread.run_sync(
        api, ca_home, a.address("http"), "GET", f"/api/v1/networks/{bundle.network_uuid}")
    assert status == 200, doc
    target = doc["network"]["devices"][0]["values"][0]["uuid"]
    status, doc = await trio.to_thread.run_sync(
        api, ca_home, a.address("http"), "POST", f"/api/v1/values/{target}/control",
        {"data": 21.5})
    assert status == 200, doc
    assert doc["device_online"] is True  # on node b: the registry says so
    message = await trio.to_thread.run_sync(device.message)
    assert (message.topic, message.qos) == ("control/thermo/target", 1)
    assert json.loads(message.payload)["data"] == "21.5"
    await trio.to_thread.run_sync(device.close)


async def test_a_persistent_session_moves_to_node_b_with_its_queued_messages(
        nodes, ca_home, make_device, tmp_path):
    a, b = nodes
    keeper_bundle = make_device()
    sender_bundle = ca_home.issue_devices(tmp_path / "sender", count=1,
                                          network=keeper_bundle.network_uuid)[0]

    def queue_on_a() -> None:
        keeper = Device(keeper_bundle, a.address("mqtt")[1], "keeper", clean=False)
        assert keeper.connect()[1] == 0
        keeper.subscribe("inbox/#", 1)
        keeper.close()
        a.line("disconnected", client_id="keeper")
        sender = Device(sender_bundle, a.address("mqtt")[1], "sender")
        assert sender.connect()[1] == 0
        for i in range(3):
            sender.publish("inbox/x", f"m{i}".encode(), 1)  # acknowledged once queued
        sender.close()

    await trio.to_thread.run_sync(queue_on_a)

    def resume_on_b() -> list[bytes]:
        keeper = Device(keeper_bundle, b.address("mqtt")[1], "keeper", clean=False)
        flags, rc = keeper.connect()
        assert rc == 0 and flags.session_present
        got = [keeper.message() for _ in range(3)]
        keeper.close()
        return [m.payload for m in got]

    assert await trio.to_thread.run_sync(resume_on_b) == [b"m0", b"m1", b"m2"]
    a.line("cluster_session_handed_over", client_id="keeper", to=None)


async def test_an_erasure_through_node_a_cuts_the_device_on_node_b(nodes, ca_home,
                                                                   make_device):
    a, b = nodes
    bundle = make_device()
    device = Device(bundle, b.address("mqtt")[1], "doomed")

    def on_b() -> None:
        assert device.connect()[1] == 0
        device.publish("model", json.dumps(MODEL).encode())

    await trio.to_thread.run_sync(on_b)
    status, doc = await trio.to_thread.run_sync(
        api, ca_home, a.address("http"), "DELETE", f"/api/v1/networks/{bundle.network_uuid}")
    assert status == 200, doc
    assert b.line("disconnected", client_id="doomed")["reason"] == "ERASED"
    assert await trio.to_thread.run_sync(device.gone.wait, 30)
    status, doc = await trio.to_thread.run_sync(api, ca_home, b.address("http"), "GET",
                                                "/api/v1/bars")
    assert str(bundle.network_uuid) in [bar["network"] for bar in doc["barred"]]
    device.client.loop_stop()
