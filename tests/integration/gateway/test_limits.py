"""Limits: each has a config option, a counter, and a disconnect reason in the log."""

from __future__ import annotations

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

OK = ConnAck(ConnectReturnCode.ACCEPTED, False)


async def _client(running, creds, client_id):
    client = await MQTTTestClient.open(running, creds)
    assert await client.connect(client_id) == OK
    return client


async def test_a_thousand_idle_tcp_connections_do_not_keep_a_device_out(start_gateway, net_a):
    # Pending caps raised: this is about the cost of idle sockets, not about eviction
    # (test_pending.py); nor about their deadline (handshake_timeout closes a silent socket,
    # after 5 s by default: opening a thousand takes longer than that on a loaded machine).
    running = await start_gateway(max_pending=2000, max_pending_per_source=2000,
                                  connection_burst_per_source=2000, handshake_timeout=120)
    idle = [await trio.open_tcp_stream(running.host, running.port) for _ in range(1000)]
    try:
        started = trio.current_time()
        device = await _client(running, net_a, "real-device")
        elapsed = trio.current_time() - started
        print(f"\ndevice connect with 1,000 idle TCP connections open: {elapsed * 1000:.0f} ms")
        # All the idle ones are still there (waiting for a ClientHello) while it connected.
        assert running.gateway.limits.total >= 1001
        await device.send(PingReq())
        assert await device.receive() == PingResp()
    finally:
        for stream in idle:
            await stream.aclose()


async def test_max_connections_refuses_the_next_socket(start_gateway, net_a, net_b):
    running = await start_gateway(max_connections=2)
    first = await _client(running, net_a, "one")
    second = await _client(running, net_b, "two")
    third = await trio.open_tcp_stream(running.host, running.port)
    assert await third.receive_some(10) == b""
    record = await running.logs.wait("refused", cause="max_connections")
    assert record["reason"] == "THROTTLED"
    assert running.gateway.metrics.mqtt.throttled["max_connections"].value == 1
    for client in (first, second):
        await client.send(PingReq())
        assert await client.receive() == PingResp()


async def test_max_connections_per_network_refuses_the_next_session(
    start_gateway, net_a, net_a2, net_b
):
    running = await start_gateway(max_connections_per_network=1)
    first = await _client(running, net_a, "first")
    second = await MQTTTestClient.open(running, net_a2)
    assert await second.connect("second") == ConnAck(ConnectReturnCode.SERVER_UNAVAILABLE, False)
    record = await running.logs.wait("disconnected", client_id="second")
    assert (record["reason"], record["detail"]) == ("THROTTLED", "max_connections_per_network")
    other = await _client(running, net_b, "other-network")  # other networks: unaffected
    for client in (first, other):
        await client.send(PingReq())
        assert await client.receive() == PingResp()
    # The same device coming back over a new socket takes its session over, cap or not.
    again = await _client(running, net_a, "first")
    assert await first.receive() is None
    await again.send(PingReq())
    assert await again.receive() == PingResp()
    third = await MQTTTestClient.open(running, net_a2)  # and the cap still holds
    assert await third.connect("third") == ConnAck(ConnectReturnCode.SERVER_UNAVAILABLE, False)


async def test_connection_rate_cap_refuses_a_burst(start_gateway, net_a):
    running = await start_gateway(connection_rate=0.001, connection_burst=2)
    kept = [await _client(running, net_a, "one"), await _client(running, net_a, "two")]
    third = await trio.open_tcp_stream(running.host, running.port)
    assert await third.receive_some(10) == b""
    record = await running.logs.wait("refused", cause="connection_rate")
    assert record["reason"] == "THROTTLED"
    assert len(kept) == 2


async def test_a_flood_of_connects_from_one_source_spends_only_that_source_s_rate(
        start_gateway, net_a):
    running = await start_gateway(connection_rate=0.001, connection_burst=3,
                                  connection_rate_per_source=0.001, connection_burst_per_source=1)
    flood = []
    for _ in range(3):  # from 127.0.0.2: the first is admitted, the others refused
        sock = trio.socket.socket()
        await sock.bind(("127.0.0.2", 0))
        await sock.connect((running.host, running.port))
        flood.append(trio.SocketStream(sock))
    assert await flood[2].receive_some(10) == b""
    record = await running.logs.wait("refused", cause="connection_rate_per_source")
    assert record["reason"] == "THROTTLED"
    # The total bucket paid for one of them only: a device from another address gets in.
    device = await _client(running, net_a, "elsewhere")
    await device.send(PingReq())
    assert await device.receive() == PingResp()
    assert running.gateway.limits.refused["connection_rate_per_source"] == 2
    assert "connection_rate" not in running.gateway.limits.refused
    for stream in flood:
        await stream.aclose()


async def test_oversized_packet_closes_the_connection_with_client_error(start_gateway, net_a):
    running = await start_gateway(max_packet_size=1024, byte_burst=1024)
    client = await _client(running, net_a, "big")
    await client.send(Publish("t", b"x" * 2000))
    assert await client.receive() is None
    record = await running.logs.wait("disconnected", client_id="big")
    assert record["reason"] == "CLIENT_ERROR"
    assert record["detail"].startswith("max_packet_size")


async def _routed(pub, count, first_id=1):
    for i in range(first_id, first_id + count):
        await pub.send(Publish("w", b"%d" % i, QoS.AT_LEAST_ONCE, packet_id=i))
        assert await pub.receive() == PubAck(i)


async def test_max_inflight_holds_further_messages_until_an_acknowledgement(
    start_gateway, net_a, net_a2
):
    running = await start_gateway(max_inflight=2)
    sub = await _client(running, net_a, "slow")
    await sub.send(Subscribe(1, (("w", QoS.AT_LEAST_ONCE),)))
    assert await sub.receive() == SubAck(1, (1,))
    pub = await _client(running, net_a2, "fast")
    await _routed(pub, 5)
    got = [await sub.receive(), await sub.receive()]
    await sub.send(PingReq())
    assert await sub.receive() == PingResp()  # no third message: the window is full
    await sub.send(PubAck(got[0].packet_id))
    third = await sub.receive()
    assert third.payload == b"3"


async def test_max_queued_overflow_closes_the_slow_reader_with_throttled(
    start_gateway, net_a, net_a2
):
    running = await start_gateway(max_inflight=1, max_queued=3)
    sub = await _client(running, net_a, "stuck")
    await sub.send(Subscribe(1, (("w", QoS.AT_LEAST_ONCE),)))
    assert await sub.receive() == SubAck(1, (1,))
    pub = await _client(running, net_a2, "flood")
    await _routed(pub, 6)
    record = await running.logs.wait("disconnected", client_id="stuck")
    assert (record["reason"], record["detail"]) == ("THROTTLED", "max_queued reached")
    assert running.gateway.broker.statistics()["dropped"] >= 1
    await pub.send(PingReq())
    assert await pub.receive() == PingResp()  # the publisher is not harmed


async def _flood_and_count(running, sub, pub, count, size):
    await sub.send(Subscribe(1, (("r", QoS.AT_MOST_ONCE),)))
    assert await sub.receive() == SubAck(1, (0,))
    await pub.send(*(Publish("r", b"%04d" % i + b"." * size) for i in range(count)), PingReq())
    assert await pub.receive() == PingResp()
    received = [await sub.receive() for _ in range(count)]
    return [p.payload[:4] for p in received]


async def test_publish_rate_slows_the_reader_and_drops_nothing(start_gateway, net_a, net_a2):
    running = await start_gateway(publish_rate=100, publish_burst=5)
    sub = await _client(running, net_a, "sub")
    pub = await _client(running, net_a2, "pub")
    payloads = await _flood_and_count(running, sub, pub, 40, 0)
    assert payloads == [b"%04d" % i for i in range(40)]
    assert running.gateway.metrics.mqtt.throttle_pauses.value >= 1


async def test_filter_rate_paces_subscribe_packets_full_of_filters(start_gateway, net_a):
    # One 256 KiB SUBSCRIBE holds ~17,000 filters: their decoding is paid for in reading time.
    running = await start_gateway(filter_rate=100, filter_burst=4)
    client = await _client(running, net_a, "subs")
    filters = tuple((f"f/{i}", QoS.AT_MOST_ONCE) for i in range(20))
    await client.send(Subscribe(1, filters))
    assert await client.receive() == SubAck(1, (0,) * 20)
    # The reader pauses (counted before it sleeps) before it reads the next packet.
    await client.send(Subscribe(2, (("g", QoS.AT_MOST_ONCE),)))
    assert await client.receive() == SubAck(2, (0,))  # paced, answered, nothing refused
    assert running.gateway.metrics.mqtt.throttle_pauses.value >= 1


async def test_byte_rate_slows_the_reader_and_drops_nothing(start_gateway, net_a, net_a2):
    running = await start_gateway(
        byte_rate=100_000, byte_burst=2048, max_packet_size=2048
    )
    sub = await _client(running, net_a, "sub")
    pub = await _client(running, net_a2, "pub")
    payloads = await _flood_and_count(running, sub, pub, 30, 1000)
    assert payloads == [b"%04d" % i for i in range(30)]
    assert running.gateway.metrics.mqtt.throttle_pauses.value >= 1


async def test_max_sessions_per_network_refuses_a_new_client_id(start_gateway, net_a, net_b):
    running = await start_gateway(max_sessions_per_network=1)
    keeper = await _client(running, net_a, "keeper")
    extra = await MQTTTestClient.open(running, net_a)
    assert await extra.connect("extra") == ConnAck(ConnectReturnCode.SERVER_UNAVAILABLE, False)
    record = await running.logs.wait("disconnected", client_id="extra")
    assert (record["reason"], record["detail"]) == ("THROTTLED", "max_sessions_per_network")
    other = await _client(running, net_b, "extra")  # another network has its own sessions
    for client in (keeper, other):
        await client.send(PingReq())
        assert await client.receive() == PingResp()
