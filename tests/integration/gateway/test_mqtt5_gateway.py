"""MQTT 5 against the real gateway (real TLS, our CA's certificates, paho-mqtt with
protocol=MQTTv5): CONNACK properties, pass-through properties, subscription options,
shared subscriptions inside a jail, message and session expiry, will delay, server
DISCONNECT reasons, and a 3.1.1 device beside a 5 one in the same jail."""

from __future__ import annotations

import io

import trio
from gwhelpers import LogRecords, MQTTTestClient, PahoClient
from mqtt5client import Paho5, props
from paho.mqtt.packettypes import PacketTypes

from gateway.app import Gateway
from gateway.config import load_config
from gateway.logs import EventLog
from gateway.mqtt.codec import PacketReader
from gateway.mqtt.packets import PROTOCOL_LEVEL_5, Disconnect
from gateway.server import serve_mqtt

PUBLISH = PacketTypes.PUBLISH


async def test_connack_tells_what_the_gateway_grants_and_offers(start_gateway, net_a):
    running = await start_gateway(max_session_expiry=600, max_keepalive=30,
                                  receive_maximum=50, topic_alias_maximum=8,
                                  max_packet_size=65536)
    dev = Paho5(running, net_a)  # empty client id: the gateway assigns one
    flags, rc, p = await dev.connect(keepalive=0, clean_start=False, properties=props(
        PacketTypes.CONNECT, SessionExpiryInterval=0xFFFFFFFF))
    assert rc == 0 and not flags.session_present
    assert p.AssignedClientIdentifier.startswith("auto-")
    assert (p.ServerKeepAlive, p.SessionExpiryInterval) == (30, 600)
    assert (p.ReceiveMaximum, p.TopicAliasMaximum, p.MaximumPacketSize) == (50, 8, 65536)
    assert (p.RetainAvailable, p.WildcardSubscriptionAvailable,
            p.SubscriptionIdentifierAvailable, p.SharedSubscriptionAvailable) == (1, 1, 1, 1)
    await dev.close()


async def test_a_3_1_1_and_a_5_device_exchange_messages_both_ways(start_gateway, net_a,
                                                                   net_a2):
    running = await start_gateway()
    old = PahoClient(running, net_a, "old")
    new = Paho5(running, net_a2, "new")
    await old.connect()
    await new.connect()
    assert [int(c.value) for c in await old.subscribe("to/old", 1)] == [1]
    await new.subscribe("to/new", 1)
    await new.publish("to/old", b"from 5", 1, properties=props(
        PUBLISH, UserProperty=[("k", "v")], ContentType="text/plain"))
    got = await old.message()
    assert (got.topic, got.payload) == ("to/old", b"from 5")
    await old.publish("to/new", b"from 3.1.1", 1)
    got = await new.message()
    assert (got.topic, got.payload) == ("to/new", b"from 3.1.1")
    await old.close()
    await new.close()


async def test_properties_pass_through_to_an_mqtt5_subscriber(start_gateway, net_a, net_a2):
    running = await start_gateway()
    sub, pub = Paho5(running, net_a, "sub"), Paho5(running, net_a2, "pub")
    await sub.connect()
    await pub.connect()
    await sub.subscribe("t/#", 1, identifier=42)
    await pub.publish("t/x", b'{"x":1}', 1, properties=props(
        PUBLISH, UserProperty=[("k", "v")], ContentType="application/json",
        PayloadFormatIndicator=1, ResponseTopic="answers/x", CorrelationData=b"c-1",
        MessageExpiryInterval=300))
    got = await sub.message()
    p = got.properties
    assert (got.topic, got.payload) == ("t/x", b'{"x":1}')
    assert p.UserProperty == [("k", "v")] and p.ContentType == "application/json"
    assert (p.PayloadFormatIndicator, p.ResponseTopic, p.CorrelationData) == (
        1, "answers/x", b"c-1")
    assert 0 < p.MessageExpiryInterval <= 300
    assert p.SubscriptionIdentifier == [42]
    await sub.close()
    await pub.close()


async def test_no_local_and_retain_as_published(start_gateway, net_a):
    running = await start_gateway()
    dev = Paho5(running, net_a, "dev")
    await dev.connect()
    await dev.subscribe("loop", 1, no_local=True)
    await dev.subscribe("flag", 1, retain_as_published=True)
    await dev.publish("loop", b"mine", 1)
    await dev.publish("flag", b"kept", 1, retain=True)
    got = await dev.message()  # "loop" never comes back: the next one is "flag"
    assert (got.topic, got.retain) == ("flag", True)
    await dev.close()


async def test_retain_handling_2_sends_no_retained_message(start_gateway, net_a, net_a2):
    running = await start_gateway()
    pub = Paho5(running, net_a2, "pub")
    await pub.connect()
    await pub.publish("state/a", b"old", 1, retain=True)
    sub = Paho5(running, net_a, "sub")
    await sub.connect()
    await sub.subscribe("state/#", 1, retain_handling=2)
    await sub.subscribe("marker", 1)
    await pub.publish("marker", b"m", 1)
    got = await sub.message()
    assert got.topic == "marker"  # the retained state/a was not sent first
    await sub.close()
    await pub.close()


async def test_shared_subscription_splits_messages_and_never_crosses_jails(
        start_gateway, net_a, net_a2, net_b):
    running = await start_gateway()
    members = [Paho5(running, net_a, "m1"), Paho5(running, net_a2, "m2")]
    outsider = Paho5(running, net_b, "outsider")
    for client in (*members, outsider):
        await client.connect()
        await client.subscribe("$share/workers/jobs/#", 1)
    pub = Paho5(running, net_a, "pub")
    await pub.connect()
    for i in range(4):
        await pub.publish("jobs/x", str(i).encode(), 1)
    got = sorted([(await m.message()).payload for m in members for _ in range(2)])
    assert got == [b"0", b"1", b"2", b"3"]
    assert members[0].messages.empty() and members[1].messages.empty()
    assert outsider.messages.empty()  # another network's group shares nothing
    for client in (*members, outsider, pub):
        await client.close()


async def test_a_message_expires_while_queued_for_an_offline_session(start_gateway, net_a,
                                                                     net_a2):
    wall = Wall()
    running = await start_gateway(wall_clock=wall)
    sub = Paho5(running, net_a, "sleeper")
    await sub.connect(clean_start=True, properties=props(
        PacketTypes.CONNECT, SessionExpiryInterval=3600))
    await sub.subscribe("news/#", 1)
    await sub.close()
    await running.logs.wait("disconnected", client_id="sleeper")
    pub = Paho5(running, net_a2, "pub")
    await pub.connect()
    await pub.publish("news/short", b"stale", 1, properties=props(
        PUBLISH, MessageExpiryInterval=10))
    await pub.publish("news/long", b"fresh", 1, properties=props(
        PUBLISH, MessageExpiryInterval=1000))
    wall.now += 60
    again = Paho5(running, net_a, "sleeper")
    flags, _, _ = await again.connect(clean_start=False, properties=props(
        PacketTypes.CONNECT, SessionExpiryInterval=3600))
    assert flags.session_present
    got = await again.message()
    assert got.payload == b"fresh" and got.properties.MessageExpiryInterval <= 940
    assert again.messages.empty()
    assert running.gateway.metrics.mqtt.messages_expired.value == 1
    await again.close()
    await pub.close()


async def test_a_session_is_dropped_with_its_queue_once_its_expiry_passes(
        start_gateway, net_a, net_a2):
    wall = Wall()
    running = await start_gateway(wall_clock=wall)
    key = (net_a.network, "brief")
    sub = Paho5(running, net_a, "brief")
    await sub.connect(properties=props(PacketTypes.CONNECT, SessionExpiryInterval=5))
    await sub.subscribe("q", 1)
    await sub.close()
    await running.logs.wait("disconnected", client_id="brief")
    pub = Paho5(running, net_a2, "pub")
    await pub.connect()
    await pub.publish("q", b"queued", 1)
    assert len(running.gateway.broker.sessions.get(key).outbox) == 1
    wall.now += 4
    running.gateway.run_deadlines()
    assert running.gateway.broker.sessions.get(key) is not None
    wall.now += 2
    running.gateway.run_deadlines()  # what the gateway's deadlines task does every second
    await running.logs.wait("session_expired", client_id="brief")
    assert running.gateway.broker.sessions.get(key) is None
    assert running.gateway.metrics.mqtt.sessions_expired.value == 1
    again = Paho5(running, net_a, "brief")
    flags, _, _ = await again.connect(clean_start=False, properties=props(
        PacketTypes.CONNECT, SessionExpiryInterval=5))
    assert not flags.session_present
    await again.close()
    await pub.close()


async def test_will_waits_its_delay_and_a_reconnect_in_time_cancels_it(
        start_gateway, net_a, net_a2):
    running = await start_gateway()
    watcher = Paho5(running, net_a2, "watcher")
    await watcher.connect()
    await watcher.subscribe("lwt", 1)
    will = ("lwt", b"gone", 1, False, props(PacketTypes.WILLMESSAGE, WillDelayInterval=30))
    connect = props(PacketTypes.CONNECT, SessionExpiryInterval=300)
    dev = Paho5(running, net_a, "dev")
    await dev.connect(properties=connect, will=will)
    broker = running.gateway.broker
    # The will is held at some instant between these two readings of the broker's clock:
    # 29 s after the first is before its delay ends, 31 s after the second past it, however
    # long a loaded machine takes in between.
    before = broker.clock()
    await dev.close(graceful=False)
    await running.logs.wait("disconnected", client_id="dev")
    after = broker.clock()
    assert broker.tick(before + 29)[1] == [] and watcher.messages.empty()
    _, wills = broker.tick(after + 31)
    assert [w.payload for w in wills] == [b"gone"]
    assert (await watcher.message()).payload == b"gone"
    # Again, but the device comes back within the delay: no will.
    dev = Paho5(running, net_a, "dev")
    await dev.connect(clean_start=False, properties=connect, will=will)
    await dev.close(graceful=False)
    await running.logs.wait("disconnected", client_id="dev", reason="CONNECTION_LOST")
    back = Paho5(running, net_a, "dev")
    await back.connect(clean_start=False, properties=connect)
    assert broker.tick(broker.clock() + 3600) == ([], [])
    await back.close()
    await watcher.close()


async def test_takeover_tells_the_old_connection_0x8e(start_gateway, net_a):
    running = await start_gateway()
    first = Paho5(running, net_a, "same")
    await first.connect()
    second = Paho5(running, net_a, "same")
    await second.connect()
    rc, p = await first.disconnected()
    assert rc == 0x8E and "DUPLICATE_CLIENTID" in p.ReasonString
    first.client.loop_stop()
    await second.close()


class Wall:
    """The gateway's wall clock, moved by the test (message expiry)."""

    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_revocation_tells_the_device_0x98_administrative_action(start_gateway, pki):
    running = await start_gateway()
    creds = pki.device()
    dev = Paho5(running, creds, "victim")
    await dev.connect()
    pki.home.revoke(creds.serial, reason="key-compromise")
    rc, p = await dev.disconnected()
    assert rc == 0x98 and p.ReasonString.startswith("REVOKED")
    dev.client.loop_stop()


async def test_a_draining_node_sends_0x9c_with_the_server_reference(start_gateway, net_a,
                                                                     net_b):
    running = await start_gateway()
    dev = Paho5(running, net_a, "v5")
    old = PahoClient(running, net_b, "v311")
    await dev.connect()
    await old.connect()
    assert running.gateway.drain("other.example:8883") == 2
    rc, p = await dev.disconnected()
    assert rc == 0x9C and p.ServerReference == "other.example:8883"
    await running.logs.wait("disconnected", client_id="v311", reason="USE_ANOTHER_SERVER")
    dev.client.loop_stop()
    await old.close(graceful=False)


async def test_a_silent_mqtt5_client_gets_0x8d_keep_alive_timeout(start_gateway, net_a):
    running = await start_gateway(keepalive_factor=1.5)
    client = await MQTTTestClient.open(running, net_a)
    client.reader = PacketReader(max_packet_size=1 << 20, protocol_level=PROTOCOL_LEVEL_5)
    connack = await client.connect("quiet", protocol_level=PROTOCOL_LEVEL_5, keepalive=1)
    assert connack.return_code == 0
    disconnect = await client.receive()  # nothing sent: the gateway's deadline passes
    assert isinstance(disconnect, Disconnect) and disconnect.reason_code == 0x8D
    await client.aclose()


async def test_a_stopping_gateway_tells_mqtt5_clients_0x8b(pki, net_a):
    config = load_config(None, {"ca_home": pki.path, "mqtt": "127.0.0.1:0"})
    logs = LogRecords()
    log = EventLog(io.StringIO(), truncate_ips=True)
    log.add_listener(logs)
    gateway = Gateway(config, log=log)
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(serve_mqtt, gateway)
        dev = Paho5((host, port), net_a, "v5")
        await dev.connect()
        nursery.cancel_scope.cancel()
    rc, p = await dev.disconnected()
    assert rc == 0x8B and p.ReasonString.startswith("SERVER_SHUTDOWN")
    dev.client.loop_stop()


async def test_topic_limits_refuse_a_filter_and_close_on_a_topic_name(start_gateway, net_a,
                                                                      net_a2):
    running = await start_gateway(max_topic_levels=4, max_mounted_topic_length=64)
    dev = Paho5(running, net_a, "v5")
    await dev.connect()
    codes = await dev.subscribe("a/b/c/d/e", 1)  # 5 levels
    assert [int(c.value) for c in codes] == [0x8F]
    codes = await dev.subscribe("x" * 40, 1)  # 77 bytes once mounted
    assert [int(c.value) for c in codes] == [0x8F]
    assert [int(c.value) for c in await dev.subscribe("a/b", 1)] == [1]
    dev.client.publish("a/b/c/d/e", b"x", 1)
    rc, _ = await dev.disconnected()
    assert rc == 0x90
    dev.client.loop_stop()
    old = PahoClient(running, net_a2, "v311")
    await old.connect()
    old.client.publish("a/b/c/d/e", b"x", 1)
    record = await running.logs.wait("disconnected", client_id="v311")
    assert record["reason"] == "CLIENT_ERROR"
    await old.close(graceful=False)
