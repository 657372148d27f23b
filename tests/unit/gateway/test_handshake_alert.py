"""`admission.handshake` keeps the TLS alert OpenSSL wrote when it refused a handshake, and
`send_alert` puts it on the wire (over a real socket pair: `handshake` waits on the socket)."""

from __future__ import annotations

import ssl

import pytest
import trio

from gateway.admission import handshake, send_alert
from gateway.errors import AdmissionRefused
from gateway.tls import build_server_context

HANDSHAKE_FAILURE = 40  # RFC 5246 section 7.2: the TLS 1.2 answer to a missing certificate


@pytest.fixture(scope="module")
def server_context(ca_home) -> ssl.SSLContext:
    return build_server_context(ca_home.path / "root.crt", ca_home.path / "crl.pem",
                                ca_home.path / "server" / "server.crt",
                                ca_home.path / "server" / "server.key")


async def _refused_tls12_without_certificate(server_context, ca_home) -> tuple[
        AdmissionRefused, trio.SocketStream, trio.SSLStream]:
    left, right = trio.socket.socketpair()
    server_tcp, client_tcp = trio.SocketStream(left), trio.SocketStream(right)
    client_ctx = ssl.create_default_context(cafile=str(ca_home.path / "root.crt"))
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # the alert then travels in clear
    client = trio.SSLStream(client_tcp, client_ctx, server_hostname="localhost")
    async with trio.open_nursery() as nursery:
        # The client sends its (empty) certificate, then waits for the server's Finished.
        nursery.start_soon(client.do_handshake)
        with pytest.raises(AdmissionRefused) as caught:
            await handshake(server_tcp, lambda: server_context, 5.0)
        nursery.cancel_scope.cancel()
    return caught.value, server_tcp, client


async def test_a_refused_handshake_carries_the_alert_openssl_wrote(server_context, ca_home):
    refused, server_tcp, _ = await _refused_tls12_without_certificate(server_context, ca_home)
    assert refused.reason == "NO_CERTIFICATE"
    # One plaintext TLS 1.2 alert record: type 21, version 3.3, length 2, fatal, its code.
    assert refused.alert == bytes([21, 3, 3, 0, 2, 2, HANDSHAKE_FAILURE])
    await server_tcp.aclose()


async def test_send_alert_puts_it_on_the_wire_then_half_closes(server_context, ca_home):
    refused, server_tcp, client = await _refused_tls12_without_certificate(server_context,
                                                                            ca_home)
    with trio.fail_after(5):
        await send_alert(server_tcp, refused)
    raw = client.transport_stream
    received = b""
    with trio.fail_after(5):
        while chunk := await raw.receive_some(4096):
            received += chunk
    assert received.endswith(refused.alert)  # then EOF: the server half-closed
    await server_tcp.aclose()
    await raw.aclose()


async def test_no_alert_no_bytes(ca_home):
    left, right = trio.socket.socketpair()
    server_tcp, client_tcp = trio.SocketStream(left), trio.SocketStream(right)
    await send_alert(server_tcp, AdmissionRefused("CONNECTION_LOST", "gone"))
    await server_tcp.aclose()
    assert await client_tcp.receive_some(10) == b""  # nothing sent before the close
    await client_tcp.aclose()
