"""The HTTPS API's unauthenticated phase: a pool of its own, capped per source address and in
total, the oldest pending connection dropped when full; operators never crowded out.

Loopback only: 127.0.0.2 and friends stand for other sources (all of 127/8 is local)."""

from __future__ import annotations

import ssl
from contextlib import asynccontextmanager

import trio
from httphelpers import start_env

from gateway.http import HttpLimits
from gateway.storage import open_sqlite_store

WAIT = 20.0  # a deadline for "never happened", not a timing assertion
# A pending connection is also closed by its own deadlines (a silent socket after
# handshake_timeout, a half head after unauthenticated_header_timeout: 5 s by default). The
# eviction tests set them past any wait here, so a close seen within WAIT is an eviction,
# however loaded the machine.
SLOW = {"handshake_timeout": 3 * WAIT, "unauthenticated_header_timeout": 3 * WAIT}


@asynccontextmanager
async def _env(ca_home, tmp_path, **limits):
    async with open_sqlite_store(tmp_path / "d") as store, trio.open_nursery() as nursery:
        yield await start_env(ca_home, tmp_path / "d", nursery, store, HttpLimits(**limits))
        nursery.cancel_scope.cancel()


async def _admitted(env, count: int) -> None:
    with trio.fail_after(WAIT):
        while env.stats.pending.admitted < count:
            await trio.sleep(0.01)


async def _silent(env, source: str) -> trio.SocketStream:
    host, port = env.http
    return await trio.open_tcp_stream(host, port, local_address=source)


async def _slow_head(env, source: str) -> trio.SSLStream:
    """TLS without a client certificate, then half a request head, then nothing."""
    host, port = env.http
    ctx = ssl.create_default_context(cafile=str(env.root))
    tcp = await trio.open_tcp_stream(host, port, local_address=source)
    stream = trio.SSLStream(tcp, ctx, server_hostname=host)
    await stream.do_handshake()
    await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    return stream


async def _closed(stream) -> bool:
    with trio.fail_after(WAIT):
        try:
            return await stream.receive_some(1) == b""
        except trio.BrokenResourceError:
            return True


async def test_a_flood_of_slow_unauthenticated_connections_does_not_keep_an_operator_out(
    ca_home, tmp_path
):
    async with _env(ca_home, tmp_path, max_pending=64, max_pending_per_source=16,
                    max_connections=4, connection_burst=1000,
                    connection_burst_per_source=1000, **SLOW) as env:  # the pool is the point
        flood = [await _silent(env, "127.0.0.1") for _ in range(200)]
        flood += [await _slow_head(env, "127.0.0.1") for _ in range(40)]
        await _admitted(env, 240)
        op = env.operator()
        for _ in range(3):
            assert (await op.get("/api/v1/networks")).status == 200
        assert env.stats.pending.evicted_per_source >= 240 - 16
        assert env.stats.pending.pending("127.0.0.1") <= 16
        assert env.stats.operator_connections == 1
        op.close_sync()
        for stream in flood:
            await trio.aclose_forcefully(stream)


async def test_the_per_source_cap_drops_that_sources_oldest_connection(ca_home, tmp_path):
    async with _env(ca_home, tmp_path, max_pending=100, max_pending_per_source=2,
                    **SLOW) as env:
        other = await _slow_head(env, "127.0.0.3")
        first = await _slow_head(env, "127.0.0.2")
        second = await _silent(env, "127.0.0.2")
        await _admitted(env, 3)
        third = await _silent(env, "127.0.0.2")
        assert await _closed(first)
        pool = env.stats.pending
        assert pool.evicted_per_source == 1 and pool.evicted_total == 0
        assert env.stats.metrics.pending_evicted["max_pending_per_source"].value == 1
        assert pool.pending("127.0.0.2") == 2 and pool.pending("127.0.0.3") == 1
        for stream in (other, second, third):
            await trio.aclose_forcefully(stream)


async def test_the_total_cap_drops_the_oldest_connection_of_any_source(ca_home, tmp_path):
    async with _env(ca_home, tmp_path, max_pending=2, max_pending_per_source=10,
                    **SLOW) as env:
        oldest = await _silent(env, "127.0.0.2")
        await _admitted(env, 1)
        newer = await _silent(env, "127.0.0.3")
        await _admitted(env, 2)
        newest = await _silent(env, "127.0.0.4")
        assert await _closed(oldest)
        pool = env.stats.pending
        assert pool.evicted_total == 1 and pool.evicted_per_source == 0
        assert len(pool) == 2 and pool.pending("127.0.0.2") == 0
        assert env.stats.metrics.pending_evicted["max_pending"].value == 1
        # The public route still answers a newcomer without a certificate.
        assert (await env.client().get("/healthz")).status == 200
        for stream in (newer, newest):
            await trio.aclose_forcefully(stream)


async def test_an_operator_connection_leaves_the_pool_and_is_never_evicted(ca_home, tmp_path):
    async with _env(ca_home, tmp_path, max_pending=2, max_pending_per_source=2,
                    **SLOW) as env:
        op = env.operator()
        assert (await op.get("/api/v1/networks")).status == 200
        assert len(env.stats.pending) == 0
        flood = [await _silent(env, "127.0.0.1") for _ in range(10)]
        await _admitted(env, 11)
        assert (await op.get("/api/v1/networks")).status == 200
        assert env.stats.metrics.connections.value == 11  # the same keep-alive connection
        op.close_sync()
        for stream in flood:
            await trio.aclose_forcefully(stream)


async def _tls(env, cert=None, key=None) -> trio.SSLStream:
    host, port = env.http
    ctx = ssl.create_default_context(cafile=str(env.root))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    stream = trio.SSLStream(await trio.open_tcp_stream(host, port), ctx, server_hostname=host)
    await stream.do_handshake()
    return stream


async def _read_all(stream) -> bytes:
    out = bytearray()
    with trio.fail_after(WAIT):
        while True:
            try:
                part = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not part:
                break
            out += part
    return bytes(out)


async def test_the_head_deadline_is_short_without_an_operator_certificate_only(
    ca_home, tmp_path
):
    async with _env(ca_home, tmp_path, unauthenticated_header_timeout=0.2,
                    header_timeout=WAIT) as env:
        op_dir = env.home.path / "operator"
        operator = await _tls(env, op_dir / "operator.crt", op_dir / "operator.key")
        await operator.send_all(b"GET /api/v1/networks HTTP/1.1\r\nHost: x\r\n")
        anonymous = await _tls(env)
        await anonymous.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        # The anonymous head times out while the operator's, begun earlier, is still waited for.
        assert (await _read_all(anonymous)).startswith(b"HTTP/1.1 408 ")
        await operator.send_all(b"Connection: close\r\n\r\n")
        assert (await _read_all(operator)).startswith(b"HTTP/1.1 200 ")


async def test_a_source_over_its_accept_rate_is_closed_before_tls_and_others_still_get_in(
    ca_home, tmp_path
):
    # Rates so low nothing refills during the test: only the bursts count.
    async with _env(ca_home, tmp_path, connection_rate_per_source=0.001,
                    connection_burst_per_source=3, connection_rate=0.001,
                    connection_burst=5) as env:
        served = [await _slow_head(env, "127.0.0.2") for _ in range(3)]
        refused = await _silent(env, "127.0.0.2")  # accepted by the kernel, then closed
        assert await _closed(refused)
        other = await _slow_head(env, "127.0.0.3")  # another source: its own share
        throttled = env.stats.metrics.throttled.values()
        assert throttled == {"http_connection_rate_per_source": 1, "http_connection_rate": 0}
        # The total: 4 accepted so far of a burst of 5; a third source gets the last one.
        last = await _slow_head(env, "127.0.0.4")
        assert await _closed(await _silent(env, "127.0.0.5"))
        assert env.stats.metrics.throttled.values()["http_connection_rate"] == 1
        for stream in (*served, refused, other, last):
            await trio.aclose_forcefully(stream)
