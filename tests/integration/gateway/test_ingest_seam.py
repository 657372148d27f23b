"""The one place an inbound PUBLISH meets ingest, and what the gateway does with bad input."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import trio
from gwhelpers import MQTTTestClient

from gateway.mqtt.packets import (
    ConnAck,
    ConnectReturnCode,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    QoS,
    SubAck,
    Subscribe,
)
from gateway.storage.errors import StorageError

OK = ConnAck(ConnectReturnCode.ACCEPTED, False)


@dataclass(frozen=True)
class Reply:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class HeldPending:
    readings = 0  # none stored: the per-network readings rate is not what these test

    def __init__(self, ingest, replies):
        self.ingest, self.replies = ingest, replies

    async def wait(self):
        await self.ingest.release.wait()
        if self.ingest.fail:
            raise self.ingest.fail
        return self.replies


class HeldIngest:
    """Stands in for the durable store (not what these tests are about): each batch is
    "committed" when the test releases it, or fails on request."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.called = trio.Event()
        self.release = trio.Event()
        self.fail: Exception | None = None  # what the batch's wait raises, if anything

    async def submit_many(self, network, client_id, messages, now):
        self.calls.append((str(network), client_id, list(messages)))
        self.called.set()
        replies = [Reply("model/accepted", b"{}", 1, True)
                   for topic, _, _ in messages if topic == "model"]
        return HeldPending(self, replies)


async def test_publish_is_acknowledged_only_once_ingest_has_committed(start_gateway, net_a):
    ingest = HeldIngest()
    running = await start_gateway(ingest=ingest)
    client = await MQTTTestClient.open(running, net_a)
    assert await client.connect("dev") == OK
    await client.send(Subscribe(1, (("model/accepted", QoS.AT_LEAST_ONCE),)))
    assert await client.receive() == SubAck(1, (1,))
    await client.send(Publish("model", b'{"devices": []}', QoS.AT_LEAST_ONCE, packet_id=9))
    with trio.fail_after(20):
        await ingest.called.wait()
    assert ingest.calls == [(net_a.network, "dev", [("model", b'{"devices": []}', 1)])]
    # Pipelining: the reader goes on while the batch commits; the PUBACK waits for it.
    await client.send(PingReq())
    assert await client.receive() == PingResp()
    (connection,) = [c for c in running.gateway.connections if c.client_id == "dev"]
    assert connection.phase.conn.statistics().inbound_unacknowledged == 1
    ingest.release.set()
    assert await client.receive() == PubAck(9)
    reply = await client.receive()  # ingest's reply, published into the device's own jail
    assert (reply.topic, reply.payload) == ("model/accepted", b"{}")


async def test_acknowledgements_keep_the_order_of_the_publishes(start_gateway, net_a):
    ingest = HeldIngest()
    ingest.release.set()
    running = await start_gateway(ingest=ingest)
    client = await MQTTTestClient.open(running, net_a)
    assert await client.connect("dev") == OK
    ids = list(range(1, 201))
    for packet_id in ids:
        await client.send(Publish("report/t", b"%d" % packet_id, QoS.AT_LEAST_ONCE,
                                  packet_id=packet_id))
    assert [await client.receive() for _ in ids] == [PubAck(i) for i in ids]


@pytest.mark.parametrize(("failure", "event", "detail"), [
    (StorageError("store unavailable"), "ingest_failed", "StorageError: store unavailable"),
    # A bug is logged as one, never as a failed store; it still acknowledges nothing.
    (RuntimeError("a bug"), "internal_error", "RuntimeError: a bug"),
])
async def test_failed_ingest_closes_only_that_connection_without_acknowledging(
    start_gateway, net_a, net_b, failure, event, detail
):
    ingest = HeldIngest()
    ingest.fail = failure
    ingest.release.set()
    running = await start_gateway(ingest=ingest)
    bystander = await MQTTTestClient.open(running, net_b)
    assert await bystander.connect("bystander") == OK
    client = await MQTTTestClient.open(running, net_a)
    assert await client.connect("dev") == OK
    await client.send(Publish("report/t", b"1", QoS.AT_LEAST_ONCE, packet_id=1))
    assert await client.receive() is None  # closed, and no PUBACK came first
    record = await running.logs.wait(event)
    assert record["detail"] == detail
    assert running.gateway.metrics.mqtt.ingest_failures.value == (event == "ingest_failed")
    await bystander.send(PingReq())
    assert await bystander.receive() == PingResp()


async def test_garbage_after_the_handshake_gets_client_error_and_harms_no_one(
    start_gateway, net_a, net_b
):
    running = await start_gateway()
    bystander = await MQTTTestClient.open(running, net_b)
    assert await bystander.connect("bystander") == OK
    garbage = (
        b"\xff" * 64,  # reserved packet type 15
        b"\x10\xff\xff\xff\xff\x7f",  # a five-byte remaining length
        b"\x30\x02\x00\x00",  # PUBLISH before CONNECT (MQTT-3.1.0-1)
        b"\x10\x04\x00\x02MQ",  # a CONNECT cut short inside its own length
    )
    for data in garbage:
        client = await MQTTTestClient.open(running, net_a)
        await client.stream.send_all(data)
        assert await client.receive() is None
    # The line is written before the socket closes, so all four are there now.
    records = running.logs.find("disconnected", network=net_a.network)
    assert [r["reason"] for r in records] == ["CLIENT_ERROR"] * 4
    await bystander.send(PingReq())
    assert await bystander.receive() == PingResp()
    assert running.gateway.metrics.mqtt.internal_errors.value == 0
