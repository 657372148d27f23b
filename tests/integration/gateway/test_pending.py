"""The unauthenticated phase has its own pool: per-source and total caps evict the oldest
pending handshake, so a flood of slow sockets never keeps a real device out.

All on loopback: every 127/8 address is local on Linux, so a test binds 127.0.0.2 and
friends as other "sources"."""

from __future__ import annotations

import trio
from gwhelpers import WAIT, MQTTTestClient

from gateway.limits import source_key
from gateway.mqtt.packets import ConnAck, ConnectReturnCode, PingReq, PingResp

OK = ConnAck(ConnectReturnCode.ACCEPTED, False)
# A silent socket is also closed after handshake_timeout (5 s by default): longer than any
# wait here, so a close seen within WAIT is an eviction, however loaded the machine.
SILENT_FOR = 3 * WAIT


async def _idle(running, source: str) -> trio.SocketStream:
    return await trio.open_tcp_stream(running.host, running.port, local_address=source)


async def _admitted(running, count: int) -> None:
    """Wait until the gateway has taken `count` sockets into the pending pool."""
    with trio.fail_after(WAIT):
        while running.gateway.pending.admitted < count:
            await trio.sleep(0.01)


async def _evicted(stream: trio.SocketStream) -> bool:
    """The server closed this never-speaking socket (EOF or reset)."""
    with trio.fail_after(WAIT):
        try:
            return await stream.receive_some(1) == b""
        except trio.BrokenResourceError:
            return True


async def test_a_flood_of_silent_sockets_from_the_devices_own_source_does_not_keep_it_out(
    start_gateway, net_a
):
    running = await start_gateway(max_pending=64, max_pending_per_source=16,
                                  handshake_timeout=SILENT_FOR)
    flood = [await _idle(running, "127.0.0.1") for _ in range(300)]
    try:
        await _admitted(running, 300)
        device = await MQTTTestClient.open(running, net_a)
        assert await device.connect("real-device") == OK
        await device.send(PingReq())
        assert await device.receive() == PingResp()
        pool = running.gateway.pending
        assert pool.evicted_per_source >= 300 - 16
        assert pool.pending("127.0.0.1") <= 16
        evicted = running.gateway.metrics.mqtt.pending_evicted
        assert evicted["max_pending_per_source"].value == pool.evicted_per_source
        assert evicted["max_pending"].value == pool.evicted_total
    finally:
        for stream in flood:
            await stream.aclose()


async def test_the_per_source_cap_evicts_that_sources_oldest_pending_socket(start_gateway):
    running = await start_gateway(max_pending=100, max_pending_per_source=2,
                                  handshake_timeout=SILENT_FOR)
    other = await _idle(running, "127.0.0.3")
    first = await _idle(running, "127.0.0.2")
    second = await _idle(running, "127.0.0.2")
    await _admitted(running, 3)
    third = await _idle(running, "127.0.0.2")
    assert await _evicted(first)
    pool = running.gateway.pending
    assert pool.evicted_per_source == 1 and pool.evicted_total == 0
    assert pool.pending("127.0.0.2") == 2 and pool.pending("127.0.0.3") == 1
    assert running.gateway.metrics.mqtt.pending_evicted["max_pending_per_source"].value == 1
    for stream in (other, second, third):
        await stream.aclose()


async def test_the_total_cap_evicts_the_oldest_pending_socket_of_any_source(start_gateway):
    running = await start_gateway(max_pending=3, max_pending_per_source=10,
                                  handshake_timeout=SILENT_FOR)
    oldest = await _idle(running, "127.0.0.2")
    await _admitted(running, 1)
    rest = [await _idle(running, "127.0.0.3"), await _idle(running, "127.0.0.4")]
    await _admitted(running, 3)
    rest.append(await _idle(running, "127.0.0.5"))
    assert await _evicted(oldest)
    pool = running.gateway.pending
    assert pool.evicted_total == 1 and pool.evicted_per_source == 0
    assert len(pool) == 3 and pool.pending("127.0.0.2") == 0
    assert running.gateway.metrics.mqtt.pending_evicted["max_pending"].value == 1
    for stream in rest:
        await stream.aclose()


async def test_a_device_that_finished_its_handshake_is_never_evicted(start_gateway, net_a):
    running = await start_gateway(max_pending=4, max_pending_per_source=2,
                                  handshake_timeout=SILENT_FOR)
    device = await MQTTTestClient.open(running, net_a)
    assert await device.connect("real-device") == OK
    flood = [await _idle(running, "127.0.0.1") for _ in range(20)]
    try:
        await _admitted(running, 21)
        await device.send(PingReq())
        assert await device.receive() == PingResp()
        assert running.gateway.pending.evicted_per_source >= 18
    finally:
        for stream in flood:
            await stream.aclose()


def test_a_source_is_an_ipv4_address_or_an_ipv6_slash_64():
    assert source_key("127.0.0.2") == "127.0.0.2"
    assert source_key("2001:db8:1:2:aaaa::1") == source_key("2001:db8:1:2:bbbb::9")
    assert source_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    assert source_key("::ffff:10.0.0.1") == "10.0.0.1"
