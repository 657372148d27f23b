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
from contextlib import suppress
from uuid import UUID

import trio

from .device_session import describe
from .errors import AdmissionRefused, ConnectionEnds
from .identity import DeviceIdentity, identity_from_der
from .mqtt.errors import RemoteProtocolError
from .mqtt.events import ConnectReceived, Disconnected
from .mqtt.reason_codes import ConnAckCode
from .mqtt.session import ServerConnection
from .provisioning import ClaimIdentity, claim_of
from .reasons import DisconnectReason, RefusalCause
from .tls import TLSContexts, classify_handshake_error

__all__ = ["RECEIVE_SIZE", "HandshakeSlots", "admit_identity", "answer_refusal", "describe",
           "handshake", "read_connect", "send_alert"]

RECEIVE_SIZE = 64 * 1024
SLOT_LEASE = 1.0  # seconds a handshake counts against max_handshakes_in_progress at most
ALERT_GRACE = 1.0  # seconds a refused handshake's alert may take to leave, and be read


class HandshakeSlots:
    """At most `limit` TLS handshakes in progress at once; the others wait their turn, in
    arrival order, holding nothing but their socket.

    Why: in a reconnect storm every device's handshake would otherwise start at once, each
    then waits behind all the others' CPU, many outlive `handshake_timeout`, and the work
    spent on them is thrown away while their devices come back to start over. In slots the
    first `limit` finish in milliseconds and the rest follow; nothing is done twice.

    A slot is a lease of `lease` seconds, not a lock: a handshake still unfinished by then (a
    slow network, or a client that stalls on purpose) stops counting. Leases are reaped on
    every acquire and release, so stalled clients delay the queue by one lease at most while
    connections come and go. Waiters are handed their slot when it frees (`ParkingLot`, FIFO),
    so no newcomer overtakes them. Costs O(1) per handshake.
    """

    def __init__(self, limit: int, lease: float = SLOT_LEASE) -> None:
        if limit < 1 or lease <= 0:
            raise ValueError("handshake slots need limit >= 1 and lease > 0")
        self.limit = limit
        self.lease = lease
        self._leases: dict[object, float] = {}  # task -> lease end, oldest first
        self._queue = trio.lowlevel.ParkingLot()
        self.waited = self.leases_expired = 0  # since start

    def __len__(self) -> int:
        """Handshakes holding a slot now."""
        return len(self._leases)

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def acquire(self) -> None:
        """Take a slot, waiting in line while all are leased; cancellable while waiting."""
        task = trio.lowlevel.current_task()
        now = trio.current_time()
        self._reap(now)
        if len(self._leases) < self.limit and not self._queue:
            self._leases[task] = now + self.lease
            return
        self.waited += 1
        await self._queue.park()  # `_hand_out` leased this task its slot before waking it

    def release(self) -> None:
        """Give the calling task's slot back (a no-op when it has none, or its lease ended)."""
        self._leases.pop(trio.lowlevel.current_task(), None)
        self._reap(trio.current_time())

    def _reap(self, now: float) -> None:
        leases = self._leases
        while leases:
            oldest = next(iter(leases))
            if leases[oldest] > now:
                break
            del leases[oldest]
            self.leases_expired += 1
        free = self.limit - len(leases)
        if free > 0 and self._queue:
            for task in self._queue.unpark(count=free):
                leases[task] = now + self.lease

    def statistics(self) -> dict[str, object]:
        return {"in_progress": len(self._leases), "waiting": len(self._queue),
                "waited": self.waited, "leases_expired": self.leases_expired}


class _AlertKeeper:
    """Stands in for the `SSLContext` while trio builds one connection's `SSLStream`, only
    to keep the outgoing memory BIO that trio creates and passes to `wrap_bio`.

    Why: Python's ssl over trio is OpenSSL on two `MemoryBIO`s. When OpenSSL refuses a
    handshake it writes the TLS alert that says why (certificate_required, unknown_ca,
    certificate_revoked, certificate_expired, unsupported_certificate...) to the outgoing
    BIO and raises; trio then raises `BrokenResourceError` without sending those bytes, and
    keeps the BIO private. RFC 8446 section 6.2 and RFC 5246 section 7.2 want the alert on
    the wire, so `handshake` reads it here and the caller sends it on the TCP stream itself
    (`send_alert`). `wrap_bio` is the one method trio's `SSLStream` calls on its context
    (ssl's own public API), so this shim depends on nothing private of trio's.
    """

    __slots__ = ("_context", "outgoing")

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        self.outgoing: ssl.MemoryBIO | None = None

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO,
                 **kwargs) -> ssl.SSLObject:
        self.outgoing = outgoing
        return self._context.wrap_bio(incoming, outgoing, **kwargs)


async def send_alert(tcp: trio.SocketStream, refusal: AdmissionRefused) -> None:
    """Send the TLS alert of a handshake OpenSSL refused (`refusal.alert`, nothing when there
    is none), then half-close and read what the client had already sent, for ALERT_GRACE at
    most. Callers log and count the refusal first, so whatever the client does on reading
    the alert comes after the gateway's record of it; then they close the socket.

    Why the half-close and the drain (a lingering close, as HTTP servers do): closing a
    socket with unread data in it (a TLS 1.3 client's first MQTT bytes, sent before it
    learns of the refusal) makes the kernel send a reset at once and drop what it has not
    sent yet, which on a slow link is the alert itself.
    """
    if not refusal.alert:
        return
    with trio.move_on_after(ALERT_GRACE), suppress(trio.BrokenResourceError,
                                                   trio.ClosedResourceError, OSError):
        await tcp.send_all(refusal.alert)
        await tcp.send_eof()
        while await tcp.receive_some(RECEIVE_SIZE):
            pass


async def handshake(tcp: trio.SocketStream, context: Callable[[], ssl.SSLContext],
                    timeout: float, slots: HandshakeSlots | None = None) -> trio.SSLStream:
    """The TLS handshake of an accepted socket (MQTT and HTTPS listeners alike), on the
    context `context()` gives when its turn comes in `slots` (after the socket first speaks).

    `timeout` bounds the wait for the first bytes and, separately, the handshake itself; the
    wait for a slot is bounded by the pending pool the caller holds the connection in. A
    handshake OpenSSL refuses raises with the TLS alert OpenSSL wrote (`_AlertKeeper`) in
    `AdmissionRefused.alert`: the caller sends it (`send_alert`), then closes the socket.

    Raises:
        AdmissionRefused: no handshake within `timeout`, or OpenSSL refused it (cause named
            by `classify_handshake_error`: expired, revoked, unknown CA, no certificate...).
    """
    keeper: _AlertKeeper | None = None
    try:
        with trio.fail_after(timeout):
            await trio.lowlevel.wait_readable(tcp.socket)
        if slots is not None:
            await slots.acquire()
        try:
            with trio.fail_after(timeout):
                keeper = _AlertKeeper(context())
                stream = trio.SSLStream(tcp, keeper, server_side=True)  # type: ignore[arg-type]
                await stream.do_handshake()
        finally:
            if slots is not None:
                slots.release()
    except trio.TooSlowError:
        raise AdmissionRefused(
            RefusalCause.HANDSHAKE_TIMEOUT,
            "no TLS handshake within handshake_timeout") from None
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        outgoing = keeper.outgoing if keeper is not None else None
        raise AdmissionRefused(*classify_handshake_error(exc),
                               alert=outgoing.read() if outgoing is not None else b"") from None
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
        claim = claim_of(der) if exc.reason is RefusalCause.NOT_A_DEVICE else None
        if claim is None:
            raise
        identity = claim
    # Every connection, resumed ones too: resumption verified nothing.
    refusal = tls.refusal(identity.serial)
    if refusal is not None:
        raise AdmissionRefused(*refusal)
    if identity.not_after < tls.clock():
        raise AdmissionRefused(RefusalCause.CERT_EXPIRED, "certificate has expired")
    if isinstance(identity, DeviceIdentity) and identity.network_uuid in barred:
        raise AdmissionRefused(RefusalCause.BARRED,
                               "network erased by an operator; its identity is barred")
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


# The CONNACK of a peer refused after its TLS handshake (`answer_refusal`), as an MQTT 5
# reason; the core sends 3.1.1 clients its counterpart (0x8A banned and 0x87 are 0x05 not
# authorized, 0x88 is 0x03 server unavailable). A stale CRL is the operator's problem, not
# the certificate's: the device may retry later.
_REFUSAL_CODES: dict[RefusalCause, ConnAckCode] = {
    RefusalCause.BARRED: ConnAckCode.BANNED,
    RefusalCause.CRL_EXPIRED: ConnAckCode.SERVER_UNAVAILABLE,
}
_REFUSAL_TEXTS: dict[RefusalCause, str] = {
    RefusalCause.CRL_EXPIRED: "the gateway's certificate revocation list is out of date",
}


async def answer_refusal(stream: trio.abc.Stream, refusal: AdmissionRefused, timeout: float,
                         max_packet_size: int) -> None:
    """Tell a peer refused after its handshake why, in MQTT: read its CONNECT (within
    `timeout`) and answer CONNACK not authorized (3.1.1: 0x05; MQTT 5: 0x8A banned for a
    barred network, else 0x87, with the refusal's detail as reason string; 0x03 / 0x88
    server unavailable for a stale CRL).

    Why a CONNACK and not a TLS alert: these refusals are the gateway's own checks on a
    verified certificate (its network barred, an operator or CA certificate, the revoked set
    on a resumed session). Python's ssl has no verify callback to run them inside the
    handshake, and once it is over an alert can no longer be sent. A TLS 1.3 client counts
    its handshake done before the server has checked anything anyway, so the CONNACK is the
    first answer it can read. A peer that sends no CONNECT, or garbage, is closed without one.
    """
    core = ServerConnection(max_packet_size=max_packet_size)

    async def flush() -> None:
        data = core.data_to_send()
        if data:
            await stream.send_all(data)

    cause = refusal.reason
    with suppress(ConnectionEnds, trio.BrokenResourceError, trio.ClosedResourceError):
        await read_connect(stream, core, timeout, flush)
        core.refuse(_REFUSAL_CODES.get(cause, ConnAckCode.NOT_AUTHORIZED),
                    reason_string=_REFUSAL_TEXTS.get(cause, refusal.detail))
        await flush()
