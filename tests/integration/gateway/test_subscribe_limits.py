"""A SUBSCRIBE costs what it delivers, over real TLS: per-packet and per-session filter caps,
duplicates collapsed, one log line per SUBSCRIBE, and retained messages streamed after the
SUBACK within the inflight window."""

from __future__ import annotations

from gwhelpers import MQTTTestClient

from gateway.broker_state import Message
from gateway.jail import Jail
from gateway.mqtt.packets import (
    SUBACK_FAILURE,
    ConnAck,
    ConnectReturnCode,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    QoS,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)


async def _client(running, creds, client_id):
    client = await MQTTTestClient.open(running, creds)
    assert await client.connect(client_id) == ConnAck(ConnectReturnCode.ACCEPTED, False)
    return client


async def test_retained_messages_follow_the_suback_within_the_inflight_window(
    start_gateway, net_a
):
    running = await start_gateway(max_inflight=20)
    jail = Jail(str(net_a.network))
    # Seeded in the broker directly: this test is about the subscriber's side.
    topics = {f"r/{i // 30}/{i}" for i in range(300)}
    for topic in topics:
        running.gateway.broker.publish(
            Message(jail.mount_topic(topic), topic.encode(), QoS.AT_LEAST_ONCE, True))
    sub = await _client(running, net_a, "sub")
    # The same filter twice: one stream (the last QoS wins), two codes.
    await sub.send(Subscribe(1, (("#", QoS.AT_MOST_ONCE), ("#", QoS.AT_LEAST_ONCE))))
    assert await sub.receive() == SubAck(1, (0, 1))  # first, before any retained (3.3.1-6)
    window = [await sub.receive() for _ in range(20)]
    assert all(isinstance(p, Publish) and p.retain for p in window)
    # The window is full: nothing more comes until acknowledged.
    await sub.send(PingReq())
    assert await sub.receive() == PingResp()
    received = [p.topic for p in window]
    await sub.send(*(PubAck(p.packet_id) for p in window))
    while len(received) < len(topics):
        packet = await sub.receive()
        assert isinstance(packet, Publish) and packet.retain and packet.qos == 1
        assert packet.payload == packet.topic.encode()
        received.append(packet.topic)
        await sub.send(PubAck(packet.packet_id))
    assert sorted(received) == sorted(topics)  # each once: the duplicate made no 2nd stream
    await sub.send(PingReq())
    assert await sub.receive() == PingResp()
    assert running.gateway.metrics.mqtt.retained_out.value == len(topics)
    assert running.gateway.metrics.mqtt.subscribe_duplicates.value == 1


async def test_filters_past_the_caps_get_0x80_and_one_log_line_per_subscribe(
    start_gateway, net_a
):
    running = await start_gateway(max_filters_per_subscribe=8,
                                  max_subscriptions_per_session=3)
    sub = await _client(running, net_a, "greedy")
    filters = ([("a", 0), ("b", 1), ("a", 2), ("$SYS/x", 1), ("c", 1), ("d", 1)]
               + [(f"f/{i}", 1) for i in range(1000)])
    await sub.send(Subscribe(7, tuple((f, QoS(q)) for f, q in filters)))
    suback = await sub.receive()
    assert isinstance(suback, SubAck) and suback.packet_id == 7
    x = SUBACK_FAILURE
    # a (QoS 0, replaced by QoS 2), b, a, $-filter (jail), c, then d, f/0, f/1 past the
    # session's 3,
    # then 998 filters past the packet's 8, refused unexamined.
    assert suback.return_codes == (0, 1, 2, x, 1, x, x, x) + (x,) * 998
    assert running.gateway.broker.sessions.get((str(net_a.network), "greedy")).subscriptions[
        Jail(str(net_a.network)).mount_filter("a")] == QoS.EXACTLY_ONCE
    line = await running.logs.wait("subscribed", client_id="greedy")
    assert line["filter_count"] == len(filters) and len(line["filters"]) == 5
    refusals = running.logs.find("subscribe_denied", client_id="greedy")
    assert len(refusals) == 1
    assert refusals[0]["refused"] == 1 + 3 + 998
    assert refusals[0]["reasons"] == {"$-topics are reserved to the server": 1,
                                      "max_subscriptions_per_session": 3,
                                      "max_filters_per_subscribe": 998}
    assert refusals[0]["filters"][:2] == ["$SYS/x", "d"]
    mqtt = running.gateway.metrics.mqtt
    assert mqtt.subscribes_refused["max_filters_per_subscribe"].value == 998
    assert mqtt.subscribes_refused["max_subscriptions_per_session"].value == 3
    assert mqtt.subscribes_denied.value == 1
    # What was granted works; the refused filters route nothing.
    pub = await _client(running, net_a, "pub")
    await pub.send(Publish("d", b"no", QoS.AT_LEAST_ONCE, packet_id=1),
                   Publish("c", b"yes", QoS.AT_LEAST_ONCE, packet_id=2))
    assert await pub.receive() == PubAck(1)
    assert await pub.receive() == PubAck(2)
    got = await sub.receive()
    assert isinstance(got, Publish) and (got.topic, got.payload) == ("c", b"yes")


async def test_unsubscribing_stops_a_retained_stream_and_subscribing_again_restarts_it(
    start_gateway, net_a
):
    running = await start_gateway(max_inflight=5)
    jail = Jail(str(net_a.network))
    for i in range(100):
        running.gateway.broker.publish(
            Message(jail.mount_topic(f"r/{i}"), b"x", QoS.AT_LEAST_ONCE, True))
    sub = await _client(running, net_a, "sub")
    await sub.send(Subscribe(1, (("r/+", QoS.AT_LEAST_ONCE),)))
    assert await sub.receive() == SubAck(1, (1,))
    window = [await sub.receive() for _ in range(5)]  # then the window is full
    await sub.send(Unsubscribe(2, ("r/+",)), PingReq())
    assert await sub.receive() == UnsubAck(2)
    assert await sub.receive() == PingResp()
    await sub.send(*(PubAck(p.packet_id) for p in window), PingReq())
    assert await sub.receive() == PingResp()  # the window has room, yet nothing more comes
    # Subscribing twice: the second restarts the filter's stream rather than adding one
    # (at most one window of the first may have gone out before it).
    await sub.send(Subscribe(3, (("r/+", QoS.AT_LEAST_ONCE),)),
                   Subscribe(4, (("r/+", QoS.AT_LEAST_ONCE),)))
    topics = []
    while True:
        packet = await sub.receive()
        if isinstance(packet, Publish):
            topics.append(packet.topic)
            await sub.send(PubAck(packet.packet_id))
            if len(topics) == 100:
                await sub.send(PingReq())
        elif packet == PingResp():
            break
    assert len(set(topics)) == 100 and len(topics) <= 100 + 5
