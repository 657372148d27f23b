"""Two networks trying every way across, with paho-mqtt and Debian's mosquitto clients."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import trio
from gwhelpers import WAIT, MQTTTestClient, PahoClient

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
    Will,
)


async def test_every_way_across_from_one_network_to_another_is_closed(
    start_gateway, net_a, net_b
):
    running = await start_gateway()
    a_uuid, b_uuid = net_a.network, net_b.network
    # B listens everywhere it may, and tries the filters that would cross.
    spy = await MQTTTestClient.open(running, net_b)
    # Client id and username naming the other network change nothing.
    assert await spy.connect(a_uuid, username=a_uuid, password=b"x") == ConnAck(
        ConnectReturnCode.ACCEPTED, False
    )
    filters = ("#", "+/#", "+", f"{a_uuid}/#", f"/{a_uuid}/#", "$SYS/#", "$share/x/#", "$/#")
    await spy.send(Subscribe(1, tuple((f, QoS.AT_LEAST_ONCE) for f in filters)))
    assert await spy.receive() == SubAck(1, (1, 1, 1, 1, 1, SUBACK_FAILURE, SUBACK_FAILURE,
                                            SUBACK_FAILURE))
    # A publishes on every topic it can name, retained too, and its will goes off.
    victim = await MQTTTestClient.open(running, net_a)
    assert await victim.connect(b_uuid, username=b_uuid, will=Will(f"{b_uuid}/w", b"will")) \
        == ConnAck(ConnectReturnCode.ACCEPTED, False)
    topics = ("x", f"{b_uuid}", f"{b_uuid}/x", f"/{b_uuid}/x", "../x", "x/../../y", "//")
    for i, topic in enumerate(topics, start=1):
        await victim.send(Publish(topic, b"from A", QoS.AT_LEAST_ONCE, retain=True, packet_id=i))
        assert await victim.receive() == PubAck(i)
    await victim.stream.transport_stream.aclose()
    await running.logs.wait("disconnected", network=a_uuid)
    # B's own marker arrives: everything routed before it has been routed.
    await spy.send(Publish("marker", b"from B", QoS.AT_LEAST_ONCE, packet_id=99))
    received = []
    while True:
        packet = await spy.receive()
        if isinstance(packet, Publish):
            received.append(packet)
            await spy.send(PubAck(packet.packet_id))
            if packet.topic == "marker":
                break
    assert all(p.payload == b"from B" for p in received), received
    # A new subscriber in B gets no retained message of A's either.
    late = await MQTTTestClient.open(running, net_b)
    assert await late.connect("late") == ConnAck(ConnectReturnCode.ACCEPTED, False)
    await late.send(Subscribe(1, (("#", QoS.AT_LEAST_ONCE),)), PingReq())
    assert await late.receive() == SubAck(1, (1,))
    assert await late.receive() == PingResp()


async def test_dollar_publish_is_not_delivered_and_reported_on_the_errors_topic(
    start_gateway, net_a
):
    running = await start_gateway()
    client = await MQTTTestClient.open(running, net_a)
    assert await client.connect("d") == ConnAck(ConnectReturnCode.ACCEPTED, False)
    await client.send(Subscribe(1, (("errors", QoS.AT_MOST_ONCE), ("#", QoS.AT_MOST_ONCE))))
    assert await client.receive() == SubAck(1, (0, 0))
    await client.send(Publish("$SYS/broker/clients", b"x", QoS.AT_LEAST_ONCE, packet_id=3))
    packets = [await client.receive(), await client.receive()]
    assert PubAck(3) in packets
    (error,) = [p for p in packets if isinstance(p, Publish)]
    assert error.topic == "errors"
    assert json.loads(error.payload) == {
        "error": "publish_denied", "topic": "$SYS/broker/clients",
        "reason": "$-topics are reserved to the server",
    }
    assert running.gateway.metrics.mqtt.publishes_denied.value == 1
    await running.logs.wait("publish_denied", topic="$SYS/broker/clients")


async def test_paho_clients_exchange_qos_0_1_2_inside_one_network_only(
    start_gateway, net_a, net_a2, net_b
):
    running = await start_gateway()
    sub = PahoClient(running, net_a, "paho-sub")
    other = PahoClient(running, net_b, "paho-other")
    pub = PahoClient(running, net_a2, "paho-pub")
    for client in (sub, other, pub):
        _flags, rc = await client.connect()
        assert rc == 0
    assert [c.value for c in await sub.subscribe("t/#", 2)] == [2]
    assert [c.value for c in await other.subscribe("#", 2)] == [2]
    for qos in (0, 1, 2):
        await pub.publish(f"t/{qos}", b"q%d" % qos, qos)
        message = await sub.message()
        assert (message.topic, message.payload, message.qos) == (f"t/{qos}", b"q%d" % qos, qos)
    await other.publish("own", b"mine", 1)
    assert (await other.message()).payload == b"mine"
    assert other.messages.empty()
    for client in (sub, other, pub):
        await client.close()


async def test_paho_retained_and_will_messages(start_gateway, net_a, net_a2):
    running = await start_gateway()
    pub = PahoClient(running, net_a2, "", will=("status/pub", b"offline", 1, True))
    assert (await pub.connect())[1] == 0
    await pub.publish("config", b"v1", 1, retain=True)
    sub = PahoClient(running, net_a, "paho-sub")
    assert (await sub.connect())[1] == 0
    await sub.subscribe("#", 1)
    retained = await sub.message()
    assert (retained.topic, retained.payload, retained.retain) == ("config", b"v1", True)
    await pub.close(graceful=False)
    will = await sub.message()
    assert (will.topic, will.payload) == ("status/pub", b"offline")
    await sub.close()


async def test_paho_persistent_session_gets_messages_sent_while_offline(
    start_gateway, net_a, net_a2
):
    running = await start_gateway()
    sub = PahoClient(running, net_a, "paho-keeper", clean_session=False)
    assert (await sub.connect())[1] == 0
    await sub.subscribe("q", 1)
    await sub.close()
    await running.logs.wait("disconnected", client_id="paho-keeper")
    pub = PahoClient(running, net_a2, "paho-pub")
    assert (await pub.connect())[1] == 0
    await pub.publish("q", b"while away", 1)
    back = PahoClient(running, net_a, "paho-keeper", clean_session=False)
    flags, rc = await back.connect()
    assert rc == 0 and flags.session_present
    assert (await back.message()).payload == b"while away"
    await back.close()
    await pub.close()


needs_mosquitto = pytest.mark.skipif(
    shutil.which("mosquitto_pub") is None or shutil.which("mosquitto_sub") is None,
    reason="Debian's mosquitto-clients is not installed (make test installs it)",
)


def _mosquitto(tool, running, creds, *args):
    return [
        tool, "-h", "127.0.0.1", "-p", str(running.port), "-V", "mqttv311",
        "--cafile", str(creds.ca), "--cert", str(creds.cert), "--key", str(creds.key), *args,
    ]


@needs_mosquitto
async def test_mosquitto_clients_reach_their_network_and_no_other(
    start_gateway, net_a, net_a2, net_b
):
    running = await start_gateway()
    sub_a = subprocess.Popen(
        _mosquitto("mosquitto_sub", running, net_a, "-i", "sub-a", "-t", "#", "-q", "1",
                   "-C", "1", "-W", str(int(WAIT)), "-v"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    sub_b = subprocess.Popen(
        _mosquitto("mosquitto_sub", running, net_b, "-i", "sub-b", "-t", "#", "-q", "1",
                   "-C", "1", "-W", str(int(WAIT)), "-v"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        await running.logs.wait("subscribed", client_id="sub-a")
        await running.logs.wait("subscribed", client_id="sub-b")

        def pub(creds, topic, message):
            subprocess.run(
                _mosquitto("mosquitto_pub", running, creds, "-t", topic, "-m", message,
                           "-q", "1"),
                check=True, timeout=WAIT, capture_output=True,
            )

        await trio.to_thread.run_sync(pub, net_a2, "report/thermo/temp", "21.5")
        await trio.to_thread.run_sync(pub, net_b, "marker", "b-only")
        out_a, _ = await trio.to_thread.run_sync(lambda: sub_a.communicate(timeout=WAIT))
        out_b, _ = await trio.to_thread.run_sync(lambda: sub_b.communicate(timeout=WAIT))
    finally:
        for proc in (sub_a, sub_b):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert out_a == "report/thermo/temp 21.5\n"
    assert out_b == "marker b-only\n"
