"""The MQTT 5.0 statements about the broker above the protocol core, one test per statement
named after it (docs/mqtt5-conformance.md names them under key G): retained messages, wills,
sessions, routing, overlapping subscriptions and their identifiers, unsubscribing, ordering.
The real gateway on 127.0.0.1 port 0, real TLS with our CA's device certificates, paho-mqtt
with protocol=MQTTv5.

"Nothing was sent" is shown without waiting: a session's outbox is FIFO, so once a marker
published after the event arrives, anything the event had routed to that session would have
arrived first. Retained messages go out after the outbox, one new subscription's after the
other's in subscription order, so a later subscription holding a retained sentinel plays the
marker for them (`retained_on_subscribe`)."""

from __future__ import annotations

import queue
import uuid
from typing import Any

import trio
from gwhelpers import Running
from mqtt5client import WAIT, Paho5, props
from paho.mqtt.client import topic_matches_sub
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

PUBLISH, CONNECT, WILL = PacketTypes.PUBLISH, PacketTypes.CONNECT, PacketTypes.WILLMESSAGE
SENTINEL = "sentinel/retained"
KEEP = 300  # a session expiry interval: the session outlives its connection


class Device(Paho5):
    """`Paho5` with UNSUBSCRIBE; `window`: paho's inflight window (its default is 20)."""

    def __init__(self, *args: Any, window: int = 20, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.client.max_inflight_messages_set(window)
        self.unsubacks: queue.Queue = queue.Queue()
        self.client.on_unsubscribe = (
            lambda cl, u, mid, codes, p: self.unsubacks.put([int(c.value) for c in codes]))

    async def unsubscribe(self, *filters: str) -> list[int]:
        """Unsubscribe; return the UNSUBACK's reason codes."""
        self.client.unsubscribe(list(filters))
        return await trio.to_thread.run_sync(lambda: self.unsubacks.get(timeout=WAIT))


def ids_of(message: Any) -> list[int]:
    return sorted(getattr(message.properties, "SubscriptionIdentifier", []))


async def online(running: Running, creds: Any, client_id: str = "", window: int = 20,
                 **connect: Any) -> Device:
    device = Device(running, creds, client_id, window=window)
    _, rc, _ = await device.connect(**connect)
    assert rc == 0
    return device


async def next_topic(device: Device) -> str:
    return (await device.message()).topic


async def marker(device: Device, pub: Device, topic: str = "marker") -> None:
    """Subscribe `device` to `topic`, publish on it, and check it is the next message
    `device` gets: nothing routed to it before this call is still to come."""
    await device.subscribe(topic, 1)
    await pub.publish(topic, b"m", 1)
    got = await device.message()
    assert (got.topic, got.payload) == (topic, b"m")
    assert device.messages.empty()


async def retained_on_subscribe(running: Running, creds: Any, pub: Device,
                                topic_filter: str) -> list[Any]:
    """The retained messages a new subscription to `topic_filter` gets: a fresh session
    subscribes to it, then to SENTINEL (which holds one, published by `pub`); what arrives
    before the sentinel is the filter's."""
    await pub.publish(SENTINEL, b"s", 1, retain=True)
    late = await online(running, creds, f"late-{uuid.uuid4().hex[:8]}")
    await late.subscribe(topic_filter, 1)
    await late.subscribe(SENTINEL, 1)
    got = []
    while (message := await late.message()).topic != SENTINEL:
        got.append(message)
    await late.close()
    return got


async def close_all(*devices: Device) -> None:
    for device in devices:
        await device.close()


# -- 3.1 CONNECT: clean start, wills, client identifier --------------------------------


async def test_MQTT_3_1_2_4_clean_start_discards_the_stored_session(start_gateway, net_a,
                                                                    net_a2):
    running = await start_gateway()
    keep = props(CONNECT, SessionExpiryInterval=KEEP)
    dev = await online(running, net_a, "dev", properties=keep)
    await dev.subscribe("cs/#", 1)
    await dev.close()
    await running.logs.wait("disconnected", client_id="dev")
    pub = await online(running, net_a2, "pub")
    await pub.publish("cs/queued", b"while away", 1)
    assert len(running.gateway.broker.sessions.get((net_a.network, "dev")).outbox) == 1
    dev = Device(running, net_a, "dev")
    flags, _, _ = await dev.connect(clean_start=True, properties=keep)
    assert not flags.session_present
    await pub.publish("cs/new", b"to the old subscription", 1)
    await marker(dev, pub)  # neither the queued message nor the old subscription's
    await close_all(dev, pub)


async def test_MQTT_3_1_2_7_will_stored_with_the_session(start_gateway, net_a, net_a2):
    running = await start_gateway()
    watcher = await online(running, net_a2, "watcher")
    await watcher.subscribe("lwt/#", 2)
    dev = Device(running, net_a, "dev")
    await dev.connect(will=("lwt/dev", b"bye", 2, False, None))
    await marker(watcher, dev)  # kept, not published while the connection lives
    await dev.close(graceful=False)
    will = await watcher.message()
    assert (will.topic, will.payload, will.qos, will.retain) == ("lwt/dev", b"bye", 2, False)
    await watcher.close()


async def test_MQTT_3_1_2_10_will_discarded_on_disconnect_0x00_published_on_0x04(
        start_gateway, net_a, net_a2):
    running = await start_gateway()
    watcher = await online(running, net_a2, "watcher")
    await watcher.subscribe("lwt/#", 1)
    polite = Device(running, net_a, "polite")
    await polite.connect(will=("lwt/polite", b"never", 1, False, None))
    await polite.close()  # DISCONNECT 0x00 normal disconnection
    await running.logs.wait("disconnected", client_id="polite")
    asking = Device(running, net_a, "asking")
    await asking.connect(will=("lwt/asking", b"as asked", 1, False, None))
    await asking.close(reason_code=ReasonCode(PacketTypes.DISCONNECT, identifier=0x04))
    got = await watcher.message()  # the first will, had it been published, came first
    assert (got.topic, got.payload) == ("lwt/asking", b"as asked")
    pub = await online(running, net_a, "pub")
    await marker(watcher, pub)
    await close_all(watcher, pub)


async def _will_retain(running: Running, dev_creds: Any, other: Any, retain: bool):
    """A will of `retain` published: what a watcher (retain as published) and a later
    subscriber see."""
    watcher = await online(running, other, "watcher")
    await watcher.subscribe("lwt/#", 1, retain_as_published=True)
    dev = Device(running, dev_creds, "dev")
    await dev.connect(will=("lwt/dev", b"gone", 1, retain, None))
    await dev.close(graceful=False)
    live = await watcher.message()
    later = await retained_on_subscribe(running, other, watcher, "lwt/#")
    await watcher.close()
    return live, later


async def test_MQTT_3_1_2_14_will_retain_0_published_not_retained(start_gateway, net_a,
                                                                  net_a2):
    running = await start_gateway()
    live, later = await _will_retain(running, net_a, net_a2, retain=False)
    assert (live.topic, live.payload, live.retain) == ("lwt/dev", b"gone", False)
    assert later == []


async def test_MQTT_3_1_2_15_will_retain_1_published_retained(start_gateway, net_a, net_a2):
    running = await start_gateway()
    live, later = await _will_retain(running, net_a, net_a2, retain=True)
    assert (live.topic, live.payload, live.retain) == ("lwt/dev", b"gone", True)
    assert [(m.topic, m.payload, m.retain) for m in later] == [("lwt/dev", b"gone", True)]


async def test_MQTT_3_1_3_2_session_resumed_by_client_id(start_gateway, net_a, net_a2,
                                                         net_b):
    running = await start_gateway()
    keep = props(CONNECT, SessionExpiryInterval=KEEP)
    dev = await online(running, net_a, "keeper", properties=keep)
    await dev.subscribe("k/#", 1)
    await dev.close()
    await running.logs.wait("disconnected", client_id="keeper")
    pub = await online(running, net_a2, "pub")
    await pub.publish("k/1", b"queued", 1)
    other = Device(running, net_a, "another-id")  # same network, another client id
    flags, _, _ = await other.connect(clean_start=False, properties=keep)
    assert not flags.session_present
    stranger = Device(running, net_b, "keeper")  # same client id, another network
    flags, _, _ = await stranger.connect(clean_start=False, properties=keep)
    assert not flags.session_present
    dev = Device(running, net_a, "keeper")
    flags, _, _ = await dev.connect(clean_start=False, properties=keep)
    assert flags.session_present
    assert (await dev.message()).payload == b"queued"
    await pub.publish("k/2", b"live", 1)  # the subscription came back with the session
    assert (await dev.message()).payload == b"live"
    await close_all(dev, pub, other, stranger)


async def test_MQTT_3_1_3_10_will_properties_pass_through(start_gateway, net_a, net_a2):
    running = await start_gateway()
    watcher = await online(running, net_a2, "watcher")
    await watcher.subscribe("lwt/#", 1)
    users = [("b", "2"), ("a", "1"), ("b", "3"), ("a", "0")]  # repeated names, not sorted
    dev = Device(running, net_a, "dev")
    await dev.connect(will=("lwt/dev", b'{"gone":1}', 1, False, props(
        WILL, UserProperty=users, ContentType="application/json", PayloadFormatIndicator=1,
        ResponseTopic="answers/dev", CorrelationData=b"\x00c")))
    await dev.close(graceful=False)
    p = (await watcher.message()).properties
    assert p.UserProperty == users
    assert (p.ContentType, p.PayloadFormatIndicator, p.ResponseTopic, p.CorrelationData) == (
        "application/json", 1, "answers/dev", b"\x00c")
    await watcher.close()


# -- 3.2 CONNACK -------------------------------------------------------------------------


async def test_MQTT_3_2_2_16_assigned_client_identifiers_unique(start_gateway, net_a):
    running = await start_gateway()
    devices, assigned = [], []
    for _ in range(3):
        device = Device(running, net_a)  # zero-length client id
        _, rc, p = await device.connect()
        assert rc == 0
        devices.append(device)
        assigned.append(p.AssignedClientIdentifier)
    assert len(set(assigned)) == 3
    # Each is its own session: none took another over, all three are live.
    assert all(running.gateway.broker.is_live((net_a.network, a)) for a in assigned)
    assert all(d.disconnects.empty() for d in devices)
    await close_all(*devices)


# -- 3.3 PUBLISH: retained messages, routing, overlapping subscriptions -------------------


async def test_MQTT_3_3_1_5_retained_message_replaced(start_gateway, net_a, net_a2):
    running = await start_gateway()
    pub = await online(running, net_a, "pub")
    await pub.publish("r/t", b"first", 1, retain=True)
    await pub.publish("r/t", b"second", 1, retain=True)
    got = await retained_on_subscribe(running, net_a2, pub, "r/t")
    assert [(m.topic, m.payload, m.retain) for m in got] == [("r/t", b"second", True)]
    await pub.close()


async def test_MQTT_3_3_1_6_empty_retained_payload_removes_the_retained_message(
        start_gateway, net_a, net_a2):
    running = await start_gateway()
    pub = await online(running, net_a, "pub")
    live = await online(running, net_a2, "live")
    await live.subscribe("r/#", 1)
    await pub.publish("r/t", b"value", 1, retain=True)
    await pub.publish("r/t", b"", 1, retain=True)
    # Processed normally: a present subscriber gets both.
    assert [(await live.message()).payload for _ in range(2)] == [b"value", b""]
    assert await retained_on_subscribe(running, net_a2, pub, "r/#") == []
    await close_all(live, pub)


async def test_MQTT_3_3_1_7_empty_retained_message_not_stored(start_gateway, net_a, net_a2):
    running = await start_gateway()
    pub = await online(running, net_a, "pub")
    await pub.publish("r/empty", b"", 1, retain=True)  # no retained message there before
    assert running.gateway.broker.retained.count(net_a.network) == 0
    assert await retained_on_subscribe(running, net_a2, pub, "r/#") == []
    await pub.close()


async def test_MQTT_3_3_1_8_retain_0_leaves_the_retained_message(start_gateway, net_a,
                                                                 net_a2):
    running = await start_gateway()
    pub = await online(running, net_a, "pub")
    await pub.publish("r/t", b"kept", 1, retain=True)
    await pub.publish("r/t", b"passing", 1, retain=False)
    await pub.publish("r/other", b"passing", 1, retain=False)  # not stored either
    got = await retained_on_subscribe(running, net_a2, pub, "r/#")
    assert [(m.topic, m.payload, m.retain) for m in got] == [("r/t", b"kept", True)]
    await pub.close()


async def test_MQTT_3_3_2_3_delivered_topic_matches_the_filter(start_gateway, net_a, net_a2):
    running = await start_gateway()
    sub = await online(running, net_a, "sub")
    pub = await online(running, net_a2, "pub")
    filters = ["f/+/c", "g/#"]
    for topic_filter in filters:
        await sub.subscribe(topic_filter, 1)
    for topic in ["f/b/c", "f/b/d", "f/b/c/d", "f//c", "g", "g/h/i", "gg/h", "F/b/c"]:
        await pub.publish(topic, topic.encode(), 1)
    got = [await sub.message() for _ in range(4)]
    assert [(m.topic, m.payload) for m in got] == [
        ("f/b/c", b"f/b/c"), ("f//c", b"f//c"), ("g", b"g"), ("g/h/i", b"g/h/i")]
    assert all(any(topic_matches_sub(f, m.topic) for f in filters) for m in got)
    await marker(sub, pub)
    await close_all(sub, pub)


async def test_MQTT_3_3_4_2_overlapping_subscriptions_deliver_at_the_highest_qos(
        start_gateway, net_a, net_a2):
    running = await start_gateway()
    pub = await online(running, net_a2, "pub")
    plain = await online(running, net_a, "plain")
    with_ids = await online(running, net_a, "with-ids")  # subscription options in play
    for sub, ids in ((plain, (None, None)), (with_ids, (1, 2))):
        await sub.subscribe("o/#", 0, identifier=ids[0])
        await sub.subscribe("o/x", 2, identifier=ids[1])
    await pub.publish("o/x", b"both match", 2)
    await pub.publish("o/y", b"one matches", 2)
    for sub in (plain, with_ids):
        got = [await sub.message() for _ in range(2)]  # one copy each
        # Order is promised per QoS only (4.6): a QoS 0 copy may overtake a QoS 2 one.
        assert sorted((m.topic, m.qos) for m in got) == [("o/x", 2), ("o/y", 0)]
        await marker(sub, pub)
    await close_all(plain, with_ids, pub)


async def test_MQTT_3_3_4_3_overlapping_subscription_identifiers_are_sent(
        start_gateway, net_a, net_a2):
    running = await start_gateway()
    pub = await online(running, net_a2, "pub")
    sub = await online(running, net_a, "sub")
    await sub.subscribe("s/#", 1, identifier=11)
    await sub.subscribe("s/x", 1)  # overlapping, without an identifier
    await pub.publish("s/x", b"x", 1)
    assert ids_of(await sub.message()) == [11]
    await marker(sub, pub)
    await close_all(sub, pub)


async def test_MQTT_3_3_4_4_one_copy_carries_all_matching_identifiers(start_gateway, net_a,
                                                                      net_a2):
    running = await start_gateway()
    pub = await online(running, net_a2, "pub")
    sub = await online(running, net_a, "sub")
    for topic_filter, identifier in (("s/#", 7), ("s/+", 300), ("s/x", 268_435_455),
                                     ("t/#", 9)):
        await sub.subscribe(topic_filter, 1, identifier=identifier)
    await pub.publish("s/x", b"x", 1)
    assert ids_of(await sub.message()) == [7, 300, 268_435_455]  # not t/#'s 9
    await marker(sub, pub)
    await close_all(sub, pub)


async def test_MQTT_3_3_4_5_each_copy_carries_its_subscriptions_identifier(
        start_gateway, net_a, net_a2):
    running = await start_gateway()
    pub = await online(running, net_a2, "pub")
    sub = await online(running, net_a, "sub")
    # A shared subscription and an ordinary one of the same session: two copies.
    await sub.subscribe("$share/g/m/#", 1, identifier=21)
    await sub.subscribe("m/x", 1, identifier=22)
    await pub.publish("m/x", b"x", 1)
    got = [await sub.message() for _ in range(2)]
    assert sorted(ids_of(m) for m in got) == [[21], [22]]
    assert [m.topic for m in got] == ["m/x", "m/x"]
    await marker(sub, pub)
    await close_all(sub, pub)


# -- 3.8 SUBSCRIBE, 3.10 UNSUBSCRIBE -----------------------------------------------------


async def test_MQTT_3_8_4_3_identical_filter_replaces_the_subscription(start_gateway, net_a,
                                                                       net_a2):
    running = await start_gateway()
    pub = await online(running, net_a2, "pub")
    sub = await online(running, net_a, "sub")
    assert [int(c.value) for c in await sub.subscribe("r/#", 2, identifier=1)] == [2]
    assert [int(c.value) for c in await sub.subscribe("r/#", 1, identifier=2)] == [1]
    state = running.gateway.broker.sessions.get((net_a.network, "sub"))
    assert len(state.subscriptions) == 1
    await pub.publish("r/x", b"x", 2)
    got = await sub.message()
    assert (got.qos, ids_of(got)) == (1, [2])  # the new subscription's QoS and identifier
    await marker(sub, pub)  # one copy: the old subscription is gone
    await close_all(sub, pub)


async def test_MQTT_3_8_4_8_delivered_qos_is_the_minimum_of_message_and_grant(
        start_gateway, net_a, net_a2):
    running = await start_gateway()
    pub = await online(running, net_a2, "pub")
    subs = [await online(running, net_a, f"sub{granted}") for granted in range(3)]
    for granted, sub in enumerate(subs):
        await sub.subscribe("q/#", granted)
    for qos in range(3):
        await pub.publish(f"q/{qos}", b"x", qos)
    # A QoS 0 publish is not acknowledged: the QoS 2 one after it, on the same
    # connection, is routed after it.
    for granted, sub in enumerate(subs):
        got = [await sub.message() for _ in range(3)]
        assert [(m.topic, m.qos) for m in got] == [
            (f"q/{qos}", min(qos, granted)) for qos in range(3)]
    await close_all(pub, *subs)


async def test_MQTT_3_10_4_1_unsubscribe_compares_filters_character_by_character(
        start_gateway, net_a, net_a2):
    running = await start_gateway()
    pub = await online(running, net_a2, "pub")
    sub = await online(running, net_a, "sub")
    await sub.subscribe("u/+", 1, identifier=1)
    await sub.subscribe("u/#", 1, identifier=2)
    # Only the identical string deletes: "u/a" and "U/+" match nothing here.
    assert await sub.unsubscribe("u/#", "u/a", "U/+", "u/+/") == [0x00, 0x11, 0x11, 0x11]
    await pub.publish("u/a", b"x", 1)
    assert ids_of(await sub.message()) == [1]  # through u/+ alone
    await marker(sub, pub)
    await close_all(sub, pub)


async def test_MQTT_3_10_4_2_no_new_messages_for_a_deleted_subscription(start_gateway, net_a,
                                                                        net_a2):
    running = await start_gateway()
    pub = await online(running, net_a2, "pub")
    sub = await online(running, net_a, "sub")
    await sub.subscribe("v/#", 1)
    await pub.publish("v/1", b"before", 1)
    assert (await sub.message()).payload == b"before"
    assert await sub.unsubscribe("v/#") == [0x00]
    await pub.publish("v/2", b"after", 1)
    await marker(sub, pub)
    await close_all(sub, pub)


# -- 4.5 delivery, 4.6 ordering ----------------------------------------------------------


async def test_MQTT_4_5_0_1_message_added_to_every_matching_session(start_gateway, net_a,
                                                                     net_a2):
    running = await start_gateway()
    keep = props(CONNECT, SessionExpiryInterval=KEEP)
    pub = await online(running, net_a2, "pub")
    live_a = await online(running, net_a, "live-a")
    live_b = await online(running, net_a, "live-b")
    away = await online(running, net_a, "away", properties=keep)
    other = await online(running, net_a, "other")
    await live_a.subscribe("d/#", 1)
    await live_b.subscribe("d/+", 2)
    await away.subscribe("d/x", 1)
    await other.subscribe("e/#", 1)
    await away.close()
    await running.logs.wait("disconnected", client_id="away")
    await pub.publish("d/x", b"for all", 1)
    assert (await live_a.message()).payload == b"for all"
    assert (await live_b.message()).payload == b"for all"
    away = Device(running, net_a, "away")
    flags, _, _ = await away.connect(clean_start=False, properties=keep)
    assert flags.session_present and (await away.message()).payload == b"for all"
    await marker(other, pub, "e/marker")  # a session without a matching subscription
    await close_all(pub, live_a, live_b, away, other)


async def _burst(pub: Device, topics: list[tuple[str, int]]) -> None:
    """Publish one message per (topic, QoS), payload "index:QoS", without waiting between
    them; return once the last QoS 1/2 one is acknowledged (the gateway routes in order).
    `pub`'s paho window must hold them all: a QoS 1/2 message past it would wait in paho
    while a later QoS 0 one went out."""
    infos = [pub.client.publish(topic, f"{i}:{qos}".encode(), qos)
             for i, (topic, qos) in enumerate(topics)]
    last = [info for info, (_, qos) in zip(infos, topics, strict=True) if qos][-1]
    await trio.to_thread.run_sync(lambda: last.wait_for_publish(WAIT))
    assert last.is_published()


def assert_ordered(got: list[Any], topics: list[tuple[str, int]]) -> None:
    """`got` holds every message of the burst `topics`, each (topic, published QoS) in the
    order sent. Across QoS levels no order is promised (section 4.6), and paho hands a QoS 2
    message to the application only at its PUBREL."""
    assert sorted(m.payload for m in got) == sorted(
        f"{i}:{qos}".encode() for i, (_, qos) in enumerate(topics))
    for stream in set(topics):
        sent = [f"{i}:{q}".encode() for i, (t, q) in enumerate(topics) if (t, q) == stream]
        received = [m.payload for m in got
                    if m.topic == stream[0] and m.payload.endswith(b":%d" % stream[1])]
        assert received == sent, stream


async def test_MQTT_4_6_0_5_ordered_topic_delivered_in_arrival_order(start_gateway, net_a,
                                                                     net_a2):
    running = await start_gateway()
    pub = await online(running, net_a2, "pub", window=100)
    subs = [await online(running, net_a, f"sub{qos}") for qos in (1, 2)]
    for qos, sub in zip((1, 2), subs, strict=True):
        await sub.subscribe("ord/t", qos)
    topics = [("ord/t", 1 + i % 2) for i in range(40)]
    await _burst(pub, topics)
    for sub in subs:
        assert_ordered([await sub.message() for _ in topics], topics)
    await close_all(pub, *subs)


async def test_MQTT_4_6_0_6_every_topic_ordered_by_default(start_gateway, net_a, net_a2):
    running = await start_gateway()
    pub = await online(running, net_a2, "pub", window=100)
    sub = await online(running, net_a, "sub")
    await sub.subscribe("ord/#", 2)
    await sub.subscribe("+/x/#", 1)  # overlapping: still one copy, in order
    topics = [(f"ord/x/{'abc'[i % 3]}", (i // 3) % 3) for i in range(60)]
    await _burst(pub, topics)
    got = [await sub.message() for _ in topics]
    assert_ordered(got, topics)
    await marker(sub, pub)
    await close_all(pub, sub)
