"""MQTT 3.1.1 packets by hand over a blocking TLS socket, for attacks paho will not make:
a SUBSCRIBE of thousands of filters sent without reading what comes back, a QoS 0 flood
paced only by TCP backpressure. Encoding per MQTT 3.1.1 sections 2.2.3 (remaining length),
3.1 (CONNECT), 3.3 (PUBLISH) and 3.8 (SUBSCRIBE).
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from .bundle import Bundle
from .errors import GatewayError


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def connect_packet(client_id: str, clean: bool = True, keepalive: int = 60) -> bytes:
    body = _utf8("MQTT") + bytes([4, 0x02 if clean else 0]) + keepalive.to_bytes(2, "big")
    body += _utf8(client_id)
    return bytes([0x10]) + _length(len(body)) + body


def publish_packet(topic: str, payload: bytes, *, qos: int = 0, retain: bool = False,
                   packet_id: int = 1) -> bytes:
    body = _utf8(topic) + (packet_id.to_bytes(2, "big") if qos else b"") + payload
    return bytes([0x30 | qos << 1 | int(retain)]) + _length(len(body)) + body


def subscribe_packet(packet_id: int, filters: list[str], qos: int = 1) -> bytes:
    body = packet_id.to_bytes(2, "big") + b"".join(_utf8(f) + bytes([qos]) for f in filters)
    return bytes([0x82]) + _length(len(body)) + body


def filters_fitting(make: callable, limit: int) -> list[str]:
    """As many filters `make(i)` as fit in a SUBSCRIBE of at most `limit` bytes."""
    out, size, i = [], 5, 0
    while True:
        f = make(i)
        cost = len(f.encode()) + 3
        if size + cost > limit - 4:
            return out
        out.append(f)
        size += cost
        i += 1


def tls_context(bundle: Bundle | None, ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    ctx.check_hostname = False  # we dial the gateway by address; its name is not the point
    if bundle is not None:
        ctx.load_cert_chain(str(bundle.cert), str(bundle.key))
    return ctx


def read_exact(sock: ssl.SSLSocket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed by the gateway")
        data += chunk
    return data


def read_packet(sock: ssl.SSLSocket) -> tuple[int, bytes]:
    """(first byte, body) of the next packet."""
    head = read_exact(sock, 1)[0]
    n, shift = 0, 0
    while True:
        b = read_exact(sock, 1)[0]
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return head, read_exact(sock, n)


def open_session(bundle: Bundle, host: str, port: int, client_id: str, *,
                 clean: bool = True, timeout: float = 30.0) -> ssl.SSLSocket:
    """A TLS connection past CONNACK 0, blocking, with `timeout` on every call.

    Raises:
        GatewayError: the gateway cannot be reached or refused the CONNECT.
    """
    try:
        tcp = socket.create_connection((host, port), timeout=timeout)
        sock = tls_context(bundle, bundle.ca).wrap_socket(tcp)
        sock.sendall(connect_packet(client_id, clean))
        head, body = read_packet(sock)
    except (OSError, ssl.SSLError) as exc:
        raise GatewayError(f"attacker connection to {host}:{port} failed: {exc}") from None
    if head != 0x20 or len(body) != 2 or body[1] != 0:
        sock.close()
        raise GatewayError(f"attacker refused: CONNACK {body.hex()}")
    return sock
