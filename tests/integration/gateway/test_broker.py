"""A conforming MQTT 3.1.1 broker inside each jail, over real TLS, with exact packets."""

from __future__ import annotations

from gwhelpers import MQTTTestClient

from gateway.mqtt.packets import (
    ConnAck,
    ConnectReturnCode,
    Disconnect,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    QoS,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    Will,
)

ACCEPTED = ConnAck(ConnectReturnCode.ACCEPTED, False)


async def _client(running, creds, client_id="c", **kw):
    client = await MQTTTestClient.open(running, creds)
    assert await client.connect(client_id, **kw) == ConnAck(
        ConnectReturnCode.ACCEPTED, kw.pop("expect_present", False)
    )
    return client


async def _subscribe(client, *filters, packet_id=1):
    await client.send(Subscribe(packet_id, tuple(filters)))
    return await client.receive()


async def test_qos1_publish_is_acknowledged_and_delivered_at_the_granted_qos(
    start_gateway, net_a, net_a2
):
    running = await start_gateway()
    sub = await _client(running, net_a, "sub")
    pub = await _client(running, net_a2, "pub")
    assert await _subscribe(sub, ("t/#", QoS.AT_LEAST_ONCE)) == SubAck(1, (1,))
    await pub.send(Publish("t/1", b"hello", QoS.AT_LEAST_ONCE, packet_id=7))
    assert await pub.receive() == PubAck(7)
    delivered = await sub.receive()
    assert (delivered.topic, delivered.payload, delivered.qos) == ("t/1", b"hello", 1)
    await sub.send(PubAck(delivered.packet_id))
    # QoS 2 downgraded to the granted QoS 1; QoS 0 stays 0.
    await pub.send(Publish("t/2", b"two", QoS.EXACTLY_ONCE, packet_id=8))
    assert await pub.receive() == PubRec(8)
    await pub.send(PubRel(8))
    assert await pub.receive() == PubComp(8)
    delivered = await sub.receive()
    assert (delivered.topic, delivered.qos) == ("t/2", QoS.AT_LEAST_ONCE)
    await pub.send(Publish("t/0", b"zero"))
    delivered_zero = await sub.receive()
    assert (delivered_zero.topic, delivered_zero.qos) == ("t/0", QoS.AT_MOST_ONCE)


async def test_qos2_delivery_to_the_device_completes_the_four_way_handshake(
    start_gateway, net_a, net_a2
):
    running = await start_gateway()
    sub = await _client(running, net_a, "sub")
    pub = await _client(running, net_a2, "pub")
    assert await _subscribe(sub, ("q2", QoS.EXACTLY_ONCE)) == SubAck(1, (2,))
    await pub.send(Publish("q2", b"x", QoS.EXACTLY_ONCE, packet_id=1))
    assert await pub.receive() == PubRec(1)
    delivered = await sub.receive()
    assert delivered.qos == QoS.EXACTLY_ONCE
    await sub.send(PubRec(delivered.packet_id))
    assert await sub.receive() == PubRel(delivered.packet_id)
    await sub.send(PubComp(delivered.packet_id), PingReq())
    assert await sub.receive() == PingResp()
    assert running.gateway.broker.statistics()["delivered"] == 1


async def test_retained_message_is_set_replaced_and_cleared(start_gateway, net_a):
    running = await start_gateway()
    pub = await _client(running, net_a, "pub")
    await pub.send(Publish("r/x", b"one", QoS.AT_LEAST_ONCE, retain=True, packet_id=1))
    assert await pub.receive() == PubAck(1)
    await pub.send(Publish("r/x", b"two", QoS.AT_LEAST_ONCE, retain=True, packet_id=2))
    assert await pub.receive() == PubAck(2)
    late = await _client(running, net_a, "late")
    assert await _subscribe(late, ("r/#", QoS.AT_LEAST_ONCE)) == SubAck(1, (1,))
    retained = await late.receive()
    assert (retained.topic, retained.payload, retained.retain) == ("r/x", b"two", True)
    await late.send(PubAck(retained.packet_id))
    await pub.send(Publish("r/x", b"", QoS.AT_LEAST_ONCE, retain=True, packet_id=3))
    assert await pub.receive() == PubAck(3)
    # Live subscribers get the clearing message with retain 0 (MQTT-3.3.1-9).
    cleared = await late.receive()
    assert (cleared.payload, cleared.retain) == (b"", False)
    await late.send(PubAck(cleared.packet_id))
    later = await _client(running, net_a, "later")
    await later.send(Subscribe(1, (("r/#", QoS.AT_LEAST_ONCE),)), PingReq())
    assert await later.receive() == SubAck(1, (1,))
    assert await later.receive() == PingResp()  # nothing retained came in between


async def test_will_is_published_when_the_connection_breaks(start_gateway, net_a, net_a2):
    running = await start_gateway()
    watcher = await _client(running, net_a, "watcher")
    assert await _subscribe(watcher, ("status/#", QoS.AT_LEAST_ONCE)) == SubAck(1, (1,))
    dying = await _client(
        running, net_a2, "dying", will=Will("status/dying", b"gone", QoS.AT_LEAST_ONCE)
    )
    await dying.stream.transport_stream.aclose()  # no DISCONNECT, no TLS goodbye
    will = await watcher.receive()
    assert (will.topic, will.payload) == ("status/dying", b"gone")
    record = await running.logs.wait("disconnected", client_id="dying")
    assert record["reason"] == "CONNECTION_LOST"


async def test_will_is_discarded_after_a_disconnect_packet(start_gateway, net_a, net_a2):
    running = await start_gateway()
    watcher = await _client(running, net_a, "watcher")
    assert await _subscribe(watcher, ("status/#", QoS.AT_LEAST_ONCE)) == SubAck(1, (1,))
    polite = await _client(running, net_a2, "polite", will=Will("status/polite", b"gone"))
    await polite.send(Disconnect())
    record = await running.logs.wait("disconnected", client_id="polite")
    assert record["reason"] == "CLIENT_DISCONNECT"
    await watcher.send(PingReq())
    assert await watcher.receive() == PingResp()
    assert running.gateway.metrics.mqtt.wills_published.value == 0


async def test_will_is_published_on_keepalive_expiry(start_gateway, net_a, net_a2):
    running = await start_gateway(keepalive_factor=0.5)
    watcher = await _client(running, net_a, "watcher")
    assert await _subscribe(watcher, ("status/#", QoS.AT_MOST_ONCE)) == SubAck(1, (0,))
    await _client(running, net_a2, "silent", keepalive=1, will=Will("status/silent", b"late"))
    record = await running.logs.wait("disconnected", client_id="silent")
    assert record["reason"] == "KEEP_ALIVE_TIMEOUT"
    will = await watcher.receive()
    assert (will.topic, will.payload) == ("status/silent", b"late")


async def test_persistent_session_keeps_subscriptions_and_queued_messages(
    start_gateway, net_a, net_a2
):
    running = await start_gateway()
    sub = await _client(running, net_a, "keeper", clean_session=False)
    assert await _subscribe(sub, ("p/#", QoS.AT_LEAST_ONCE)) == SubAck(1, (1,))
    await sub.send(Disconnect())
    await running.logs.wait("disconnected", client_id="keeper")
    pub = await _client(running, net_a2, "pub")
    for i in range(3):
        await pub.send(Publish(f"p/{i}", b"%d" % i, QoS.AT_LEAST_ONCE, packet_id=i + 1))
        assert await pub.receive() == PubAck(i + 1)
    await pub.send(Publish("p/zero", b"q0"))  # QoS 0 is not queued for an offline session
    back = await MQTTTestClient.open(running, net_a)
    assert await back.connect("keeper", clean_session=False) == ConnAck(
        ConnectReturnCode.ACCEPTED, True
    )
    got = [await back.receive() for _ in range(3)]
    assert [(m.topic, m.payload) for m in got] == [("p/0", b"0"), ("p/1", b"1"), ("p/2", b"2")]
    await back.send(*(PubAck(m.packet_id) for m in got), PingReq())
    assert await back.receive() == PingResp()


async def test_unacknowledged_message_is_resent_with_dup_after_reconnect(
    start_gateway, net_a, net_a2
):
    running = await start_gateway()
    sub = await _client(running, net_a, "forgetful", clean_session=False)
    assert await _subscribe(sub, ("d", QoS.AT_LEAST_ONCE)) == SubAck(1, (1,))
    pub = await _client(running, net_a2, "pub")
    await pub.send(Publish("d", b"once", QoS.AT_LEAST_ONCE, packet_id=1))
    first = await sub.receive()
    await sub.stream.transport_stream.aclose()  # never acknowledged
    await running.logs.wait("disconnected", client_id="forgetful")
    back = await MQTTTestClient.open(running, net_a)
    assert await back.connect("forgetful", clean_session=False) == ConnAck(
        ConnectReturnCode.ACCEPTED, True
    )
    again = await back.receive()
    assert (again.payload, again.packet_id, again.dup) == (b"once", first.packet_id, True)


async def test_clean_session_starts_without_the_old_subscriptions(start_gateway, net_a):
    running = await start_gateway()
    first = await _client(running, net_a, "x", clean_session=False)
    assert await _subscribe(first, ("s", QoS.AT_LEAST_ONCE)) == SubAck(1, (1,))
    await first.send(Disconnect())
    await running.logs.wait("disconnected", client_id="x")
    fresh = await _client(running, net_a, "x", clean_session=True)
    await fresh.send(Publish("s", b"to nobody", QoS.AT_LEAST_ONCE, packet_id=1))
    assert await fresh.receive() == PubAck(1)
    await fresh.send(PingReq())
    assert await fresh.receive() == PingResp()


async def test_overlapping_subscriptions_deliver_once_at_the_highest_qos(start_gateway, net_a):
    running = await start_gateway()
    client = await _client(running, net_a, "o")
    granted = await _subscribe(
        client, ("o/#", QoS.AT_MOST_ONCE), ("o/+", QoS.EXACTLY_ONCE), ("o/x", QoS.AT_LEAST_ONCE)
    )
    assert granted == SubAck(1, (0, 2, 1))
    await client.send(Publish("o/x", b"once", QoS.EXACTLY_ONCE, packet_id=5))
    assert await client.receive() == PubRec(5)
    await client.send(PubRel(5))
    packets = [await client.receive(), await client.receive()]
    deliveries = [p for p in packets if isinstance(p, Publish)]
    assert [(d.payload, d.qos) for d in deliveries] == [(b"once", QoS.EXACTLY_ONCE)]
    await client.send(PingReq())
    assert await client.receive() == PingResp()


async def test_unsubscribe_stops_delivery(start_gateway, net_a):
    running = await start_gateway()
    client = await _client(running, net_a, "u")
    assert await _subscribe(client, ("u/#", QoS.AT_MOST_ONCE)) == SubAck(1, (0,))
    await client.send(Unsubscribe(2, ("u/#", "never/subscribed")))
    assert await client.receive() == UnsubAck(2)
    await client.send(Publish("u/1", b"x"), PingReq())
    assert await client.receive() == PingResp()


async def test_second_connection_with_the_same_client_id_takes_over(start_gateway, net_a, net_a2):
    running = await start_gateway()
    first = await _client(running, net_a, "dup")
    second = await _client(running, net_a2, "dup")
    assert await first.receive() is None  # closed by the server
    record = await running.logs.wait("disconnected", reason="DUPLICATE_CLIENTID")
    assert record["client_id"] == "dup"
    await second.send(PingReq())
    assert await second.receive() == PingResp()


async def test_same_client_id_in_another_network_is_another_session(start_gateway, net_a, net_b):
    running = await start_gateway()
    a = await _client(running, net_a, "shared-id")
    b = await _client(running, net_b, "shared-id")
    for client in (a, b):
        await client.send(PingReq())
        assert await client.receive() == PingResp()
    assert not running.logs.find("disconnected")


async def test_zero_length_client_id_gets_an_assigned_id(start_gateway, net_a):
    running = await start_gateway()
    client = await MQTTTestClient.open(running, net_a)
    assert await client.connect("", clean_session=True) == ACCEPTED
    record = await running.logs.wait("connected")
    assert record["client_id"].startswith("auto-")
    refused = await MQTTTestClient.open(running, net_a)
    assert await refused.connect("", clean_session=False) == ConnAck(
        ConnectReturnCode.IDENTIFIER_REJECTED, False
    )


async def test_keepalive_expiry_closes_the_connection(start_gateway, net_a):
    running = await start_gateway(keepalive_factor=0.5)
    client = await _client(running, net_a, "sleepy", keepalive=1)
    assert await client.receive() is None
    record = await running.logs.wait("disconnected", client_id="sleepy")
    assert record["reason"] == "KEEP_ALIVE_TIMEOUT"


async def test_connect_must_arrive_before_its_deadline(start_gateway, net_a):
    running = await start_gateway(connect_timeout=0.2)
    client = await MQTTTestClient.open(running, net_a)
    assert await client.receive() is None
    record = await running.logs.wait("disconnected")
    assert (record["reason"], record["detail"]) == (
        "CLIENT_ERROR", "no CONNECT within connect_timeout"
    )


async def test_takeover_of_a_persistent_session_resumes_its_unacknowledged_message(
    start_gateway, net_a, net_a2
):
    running = await start_gateway()
    old = await _client(running, net_a, "moving", clean_session=False)
    assert await _subscribe(old, ("m", QoS.AT_LEAST_ONCE)) == SubAck(1, (1,))
    pub = await _client(running, net_a2, "pub")
    await pub.send(Publish("m", b"in flight", QoS.AT_LEAST_ONCE, packet_id=1))
    assert await pub.receive() == PubAck(1)
    first = await old.receive()  # delivered, never acknowledged by the old connection
    new = await MQTTTestClient.open(running, net_a)
    assert await new.connect("moving", clean_session=False) == ConnAck(
        ConnectReturnCode.ACCEPTED, True
    )
    again = await new.receive()
    assert (again.payload, again.packet_id, again.dup) == (b"in flight", first.packet_id, True)
    record = await running.logs.wait("disconnected", client_id="moving")
    assert record["reason"] == "DUPLICATE_CLIENTID"


async def test_will_with_a_dollar_topic_is_refused_at_connect(start_gateway, net_a):
    running = await start_gateway()
    client = await MQTTTestClient.open(running, net_a)
    assert await client.connect("w", will=Will("$SYS/x", b"x")) == ConnAck(
        ConnectReturnCode.NOT_AUTHORIZED, False
    )
    assert await client.receive() is None
    record = await running.logs.wait("disconnected", network=net_a.network)
    assert record["reason"] == "CLIENT_ERROR" and "will topic" in record["detail"]


async def test_closing_before_connect_is_connection_lost(start_gateway, net_a):
    running = await start_gateway()
    client = await MQTTTestClient.open(running, net_a)
    await client.aclose()
    record = await running.logs.wait("disconnected", network=net_a.network)
    assert (record["reason"], record["detail"]) == ("CONNECTION_LOST", "closed before CONNECT")
