"""The unauthenticated phase of a device connection: TLS handshake, then identity.

Theory of operation. Nothing here is spent before the client speaks: the TLS state (an SSL
object and its buffers) is built only once the socket is readable, so an idle socket costs
its file descriptor. The handshake runs under `handshake_timeout`; then the verified peer
certificate must name one network (`identity.identity_from_der`), and the gateway's own
checks apply that OpenSSL's may not have made: its verified revoked set (it changes the
moment crl.pem does, even while the TLS context cannot be rebuilt; and a resumed session, TLS
1.3 ticket or TLS 1.2 session id, skips OpenSSL's verification altogether), the
certificate's expiry, and the networks an operator barred by erasing them. Every refusal is
an `AdmissionRefused` whose `reason` is the cause token of the `refused` log line. Then the
first packet must be a CONNECT within `connect_timeout` (`read_connect`).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Container
from uuid import UUID

import trio

from .errors import AdmissionRefused, ConnectionEnds
from .identity import DeviceIdentity, identity_from_der
from .mqtt.errors import PacketTooLarge, RemoteProtocolError
from .mqtt.events import ConnectReceived, Disconnected
from .mqtt.session import ServerConnection
from .provisioning import ClaimIdentity, claim_of
from .reasons import DisconnectReason
from .tls import TLSContexts, classify_handshake_error

__all__ = ["RECEIVE_SIZE", "admit_identity", "describe", "handshake", "read_connect"]

RECEIVE_SIZE = 64 * 1024


async def handshake(tcp: trio.SocketStream, context: Callable[[], ssl.SSLContext],
                    timeout: float) -> trio.SSLStream:
    """The TLS handshake of an accepted socket (MQTT and HTTPS listeners alike), on the
    context `context()` gives when the socket first speaks.

    Raises:
        AdmissionRefused: no handshake within `timeout`, or OpenSSL refused it (cause named
            by `classify_handshake_error`: expired, revoked, unknown CA, no certificate...).
    """
    try:
        with trio.fail_after(timeout):
            await trio.lowlevel.wait_readable(tcp.socket)
            stream = trio.SSLStream(tcp, context(), server_side=True)
            await stream.do_handshake()
    except trio.TooSlowError:
        raise AdmissionRefused(
            "HANDSHAKE_TIMEOUT", "no TLS handshake within handshake_timeout") from None
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise AdmissionRefused(*classify_handshake_error(exc)) from None
    return stream


def admit_identity(stream: trio.SSLStream, tls: TLSContexts,
                   barred: Container[UUID]) -> DeviceIdentity | ClaimIdentity:
    """The identity of a finished handshake, if the gateway admits it now: a device's, or a
    claim certificate's (admitted to the provisioning jail only, `gateway.provisioning`).

    Raises:
        AdmissionRefused: neither a device nor a claim certificate, revoked (or the CRL is
            stale), expired, or its network is barred.
    """
    der = stream.getpeercert(binary_form=True)
    try:
        identity: DeviceIdentity | ClaimIdentity = identity_from_der(der)
    except AdmissionRefused as exc:
        claim = claim_of(der) if exc.reason == "NOT_A_DEVICE" else None
        if claim is None:
            raise
        identity = claim
    # Every connection, resumed ones too: resumption verified nothing.
    refusal = tls.refusal(identity.serial)
    if refusal is not None:
        raise AdmissionRefused(*refusal)
    if identity.not_after < tls.clock():
        raise AdmissionRefused("CERT_EXPIRED", "certificate has expired")
    if isinstance(identity, DeviceIdentity) and identity.network_uuid in barred:
        raise AdmissionRefused("BARRED", "network erased by an operator; its identity is barred")
    return identity


async def read_connect(stream: trio.abc.Stream, conn: ServerConnection, timeout: float,
                       flush: Callable[[], Awaitable[None]]) -> ConnectReceived:
    """Read until the protocol core has the CONNECT (bytes pipelined behind it stay in the
    core). `flush` sends what the core answered to a malformed first packet.

    Raises:
        ConnectionEnds: no CONNECT within `timeout`, a protocol error, or the peer left.
    """
    event = None
    with trio.move_on_after(timeout):
        while event is None:
            data = await stream.receive_some(RECEIVE_SIZE)
            conn.receive_data(data, trio.current_time())
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                await flush()
                raise ConnectionEnds(DisconnectReason.CLIENT_ERROR, describe(exc)) from None
            if not data and event is None:  # pragma: no cover - the core reports EOF
                raise ConnectionEnds(DisconnectReason.CONNECTION_LOST, "closed before CONNECT")
    if event is None:
        raise ConnectionEnds(DisconnectReason.CLIENT_ERROR, "no CONNECT within connect_timeout")
    if isinstance(event, Disconnected):  # EOF before any CONNECT
        raise ConnectionEnds(DisconnectReason.CONNECTION_LOST, "closed before CONNECT")
    if not isinstance(event, ConnectReceived):  # pragma: no cover - the core forbids it
        raise ConnectionEnds(DisconnectReason.CLIENT_ERROR, f"unexpected {event!r}")
    return event


def describe(exc: RemoteProtocolError) -> str:
    """The log detail of a protocol error: the limit or the spec rule it broke."""
    if isinstance(exc, PacketTooLarge):
        return f"max_packet_size: {exc}"
    return f"{exc.rule}: {exc}" if exc.rule else str(exc)
