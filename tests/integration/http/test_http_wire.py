"""HTTP/1.1 on the wire: keep-alive, pipelining in order, malformed and oversized requests,
deadlines. Raw TLS sockets, so the bytes are exactly what a client sends."""

from __future__ import annotations

import uuid

import trio
from httphelpers import client_context, parse_responses, raw_exchange

from gateway.http import HttpLimits


def _ctx(env):
    op = env.home.path / "operator"
    return client_context(env.root, op / "operator.crt", op / "operator.key")


async def _raw(env, data: bytes, **kw) -> bytes:
    host, port = env.http
    ctx = _ctx(env)
    return await trio.to_thread.run_sync(lambda: raw_exchange(host, port, ctx, data, **kw))


async def test_pipelined_requests_are_answered_in_order_on_one_connection(env):
    missing = uuid.uuid4()
    data = (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            + f"GET /api/v1/networks/{missing} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            + b"GET /api/v1/networks HTTP/1.1\r\nHost: x\r\n\r\n"
            + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answers = parse_responses(await _raw(env, data))
    assert [status for status, _, _ in answers] == [200, 404, 200, 200]
    assert str(missing).encode() in answers[1][2]
    assert b'"networks"' in answers[2][2]


async def test_keep_alive_serves_many_requests_on_one_connection(env):
    client = env.operator()
    for _ in range(5):
        assert (await client.get("/healthz")).status == 200
    assert env.stats.metrics.connections.value == 1


async def test_a_malformed_request_gets_400_and_a_clean_close(env):
    answers = parse_responses(await _raw(env, b"GARBAGE\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n"))
    assert len(answers) == 1  # nothing after the bad request is answered
    status, headers, body = answers[0]
    assert status == 400 and headers.get("connection") == "close"
    assert b'"malformed_request"' in body
    # The server is unharmed.
    assert (await env.client().get("/healthz")).status == 200


async def test_an_oversized_request_head_gets_431(env):
    big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n"
    ((status, headers, _),) = parse_responses(await _raw(env, big))
    assert status == 431 and headers.get("connection") == "close"


async def test_an_oversized_body_gets_413_before_it_is_read(env):
    head = (f"POST /api/v1/values/{uuid.uuid4()}/control HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n").encode()
    ((status, headers, body),) = parse_responses(await _raw(env, head))
    assert status == 413 and b'"body_too_large"' in body


async def test_an_oversized_chunked_body_gets_413(env):
    chunk = b"ffff\r\n" + b"x" * 0xFFFF + b"\r\n"
    head = (f"POST /api/v1/values/{uuid.uuid4()}/control HTTP/1.1\r\nHost: x\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    ((status, _, _),) = parse_responses(await _raw(env, head + chunk * 2))
    assert status == 413


async def test_a_request_head_that_never_ends_times_out_with_408(ca_home, tmp_path):
    from httphelpers import start_env

    from gateway.storage import open_sqlite_store

    async with open_sqlite_store(tmp_path / "d") as store, trio.open_nursery() as nursery:
        env = await start_env(ca_home, tmp_path / "d", nursery, store,
                              HttpLimits(header_timeout=0.5))
        out = await _raw(env, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # no blank line
        ((status, headers, _),) = parse_responses(out)
        assert status == 408 and headers.get("connection") == "close"
        nursery.cancel_scope.cancel()


async def test_http_1_0_gets_a_close_delimited_streamed_answer(env):
    net = uuid.uuid4()
    from httphelpers import seed_network
    await seed_network(env.ingest, net, reports=3)
    out = await _raw(env, f"GET /api/v1/networks/{net}/export HTTP/1.0\r\n\r\n".encode())
    ((status, headers, body),) = parse_responses(out)
    assert status == 200 and "transfer-encoding" not in headers
    assert body.endswith(b"}") and f'"network":"{net}"'.encode() in body


async def test_expect_100_continue_is_answered_before_the_body_is_read(env):
    body = b'{"data": 1}'
    data = (f"POST /api/v1/values/{uuid.uuid4()}/control HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Expect: 100-continue\r\nConnection: close\r\n\r\n").encode() + body
    out = await _raw(env, data)
    assert out.startswith(b"HTTP/1.1 100 ")
    final = out[out.index(b"\r\n\r\n") + 4:]
    ((status, _, _),) = parse_responses(final)
    assert status == 404  # unknown value: the body was read and validated


async def test_a_30_kb_request_head_gets_431_although_no_single_read_exceeds_the_limit(env):
    # 30 KB of fields: TLS records are at most 16 KiB, so the head reaches h11 in reads
    # that are each within max_incomplete_event_size; the whole head is what counts.
    fields = b"".join(b"X-F%d: %s\r\n" % (i, b"a" * 990) for i in range(30))
    big = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n"
    ((status, headers, body),) = parse_responses(await _raw(env, big))
    assert status == 431 and headers.get("connection") == "close"
    assert b'"header_too_large"' in body
    assert (await env.client().get("/healthz")).status == 200  # the server is unharmed


async def test_a_head_just_under_the_limit_is_answered(env):
    fields = b"".join(b"X-F%d: %s\r\n" % (i, b"a" * 990) for i in range(14))
    ((status, _, _),) = parse_responses(
        await _raw(env, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   + fields + b"\r\n"))
    assert status == 200
