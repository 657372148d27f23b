"""The server side of one MQTT 3.1.1 network connection, sans-IO (h11/h2-shaped).

Theory of operation (OASIS MQTT 3.1.1, sections 3 and 4):

    conn = ServerConnection()
    conn.receive_data(data, now)          # bytes from the socket; b"" at EOF
    while (event := conn.next_event()) is not None:
        ...                               # decide, then answer: accept(), acknowledge(), ...
    sock.send(conn.data_to_send())        # everything queued, in order

`next_event()` parses buffered bytes with the codec's `PacketReader`, runs each packet
through the one transition table (`_state`), answers by itself what needs no decision
(PINGREQ -> PINGRESP, PUBREC -> PUBREL, PUBREL -> PUBCOMP) and returns an event for the
rest. The application's answers (accept, refuse, acknowledge, grant, unsubscribed,
publish) append bytes to one outbound buffer that `data_to_send()` drains.

A peer's violation raises `RemoteProtocolError` from `next_event()` and leaves the state
ERROR: flush `data_to_send()` (it may hold the CONNACK the error asked for) and close.
Our own misuse raises `LocalProtocolError` and changes nothing.

Packet identifiers (section 2.3.1, 4.3): the two directions have separate spaces. Outbound
QoS 1/2 messages take the next free identifier and hold one slot of a window of
`max_inflight` until PUBACK (QoS 1) or PUBCOMP (QoS 2) arrives: then `DeliveryComplete`.
Inbound QoS 1/2 messages are held until the application acknowledges them; inbound QoS 2
identifiers are then held until PUBREL, and a PUBLISH re-sent with such an identifier is
answered (PUBREC) but not emitted again (MQTT-4.3.3-2). At most `max_inbound_inflight`
inbound messages may be held at once; one more is a protocol error.

Acknowledgements for identifiers the server does not know (decisions, the standard is
silent): PUBACK and PUBCOMP are ignored (a duplicate, or an acknowledgement for a session
the server no longer holds); PUBREC is answered with PUBREL so that the client can finish
its flow; PUBREL is answered with PUBCOMP (MQTT-4.3.3-2 demands a PUBCOMP for every
PUBREL). An acknowledgement of the wrong kind for a known identifier (PUBACK for a QoS 2
message, PUBREC for QoS 1, PUBCOMP before PUBREC, PUBREL before our PUBREC) is a
protocol violation (MQTT-4.8.0-1).

What this core adds to a plain MQTT state machine, for the gateway:
- `ConnectionState.CONNECT_RECEIVED` sits between AWAITING_CONNECT and CONNECTED: after
  `ConnectReceived` the application must `accept()` or `refuse()` before the next
  `next_event()` (which otherwise raises `LocalProtocolError`); packets the client
  pipelined after CONNECT stay buffered meanwhile (MQTT-3.1.4-5).
- After `Disconnected`, or in CLOSED, `next_event()` returns None and `receive_data()`
  discards bytes. In ERROR, `next_event()` raises the same `RemoteProtocolError` again.
- `acknowledge()` is allowed after the connection ended (CLOSED/ERROR): it sends nothing
  but records a QoS 2 identifier as awaiting PUBREL in `session_state()`, so a message
  stored just after the client vanished is not delivered twice on resume.
- `accept(resume=...)` requires `session_present=True` (MQTT-3.2.2-2); a clean session
  accepts neither (MQTT-3.2.2-1).
- The keepalive deadline counts from the last complete control packet (MQTT-3.1.2-24),
  not the last byte, and is None before CONNECT (the gateway's CONNECT deadline applies)
  and after the connection ended.
- `statistics()`, the `connect` property and `keepalive_deadline(factor=...)` were added.
- `receive_data(b"")` means EOF, as with trio's `receive_some()`: never feed an empty
  chunk otherwise. EOF before CONNECT yields `Disconnected(graceful=False)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from . import _state
from ._state import PACKET_TYPE as _PACKET_TYPE
from ._state import Action, ConnectionState
from .codec import DEFAULT_MAX_PACKET_SIZE, PacketReader, encode_into
from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    ConnectionStatistics,
    ConnectReceived,
    DeliveryComplete,
    Disconnected,
    Event,
    ProtocolSessionState,
    PublishReceived,
    SubscribeReceived,
    UnsubscribeReceived,
)
from .packets import (
    SUBACK_FAILURE,
    ConnAck,
    Connect,
    ConnectReturnCode,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    QoS,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from .properties import NO_PROPERTIES, Properties

MAX_PACKET_ID = 0xFFFF

# Enum members as module globals: attribute access on an Enum class costs ~10x a global
# read, and next_event() runs once per packet.
_AWAITING_CONNECT = ConnectionState.AWAITING_CONNECT
_CONNECT_RECEIVED = ConnectionState.CONNECT_RECEIVED
_CONNECTED = ConnectionState.CONNECTED
_CLOSED = ConnectionState.CLOSED
_ERROR = ConnectionState.ERROR
_QOS0 = QoS.AT_MOST_ONCE
_QOS1 = QoS.AT_LEAST_ONCE
_QOS2 = QoS.EXACTLY_ONCE
_ACKNOWLEDGE = Action.ACKNOWLEDGE
_PUBLISH = Action.PUBLISH


class ServerConnection:
    """The server's half of one MQTT 3.1.1 connection: bytes in, events out.

    Args:
        max_packet_size: largest packet accepted, checked from the fixed header before the
            body is buffered (`PacketTooLarge`).
        max_inflight: outbound QoS 1/2 messages awaiting acknowledgement at once.
        max_client_id_length: longest client identifier in UTF-8 bytes; longer gets
            CONNACK 0x02 (MQTT-3.1.3-9). At least 23 (MQTT-3.1.3-5).
        max_inbound_inflight: inbound QoS 1/2 messages held at once (awaiting the
            application's acknowledgement, or QoS 2 awaiting PUBREL); more is an error.
    """

    def __init__(
        self,
        *,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        max_inflight: int = 20,
        max_client_id_length: int = 256,
        max_inbound_inflight: int = 1000,
    ) -> None:
        if not 1 <= max_inflight <= MAX_PACKET_ID:
            raise ValueError(f"max_inflight must be in 1..{MAX_PACKET_ID}")
        if not 1 <= max_inbound_inflight <= 2 * MAX_PACKET_ID:
            raise ValueError("max_inbound_inflight must be positive")
        if max_client_id_length < 23:
            raise ValueError("max_client_id_length must be at least 23 (MQTT-3.1.3-5)")
        self._reader = PacketReader(max_packet_size=max_packet_size)
        self._max_inflight = max_inflight
        self._max_client_id_length = max_client_id_length
        self._max_inbound_inflight = max_inbound_inflight
        self._state = _AWAITING_CONNECT
        self._error: RemoteProtocolError | None = None
        self._out = bytearray()
        self._eof = False
        self._now = 0.0
        self._last_packet_at = 0.0
        self._connect: Connect | None = None
        # Outbound: packet id -> Publish awaiting PUBACK/PUBREC, or PubRel awaiting PUBCOMP.
        # A dict keeps first-send order; replacing a value keeps its position.
        self._outbound: dict[int, Publish | PubRel] = {}
        self._next_id = 1
        # Inbound: ids emitted and not yet acknowledged (-> their QoS), QoS 2 ids awaiting
        # PUBREL, and SUBSCRIBE/UNSUBSCRIBE awaiting the application's answer.
        self._unacked: dict[int, QoS] = {}
        self._awaiting_pubrel: set[int] = set()
        self._pending_subscribe: dict[int, tuple[QoS, ...]] = {}
        self._pending_unsubscribe: set[int] = set()

    # ---------------------------------------------------------------- inspection

    @property
    def state(self) -> ConnectionState:
        """The current `ConnectionState`."""
        return self._state

    @property
    def connect(self) -> Connect | None:
        """The CONNECT packet once received (client id, keepalive, will, credentials)."""
        return self._connect

    def keepalive_deadline(self, factor: float = 1.5) -> float | None:
        """When the server must disconnect if no further control packet arrives.

        The last complete packet's `now` + `factor` x keepalive; the standard's factor is
        1.5 (MQTT-3.1.2-24), a gateway may configure a larger one. None when the keepalive
        is 0 (disabled), before CONNECT, and once the connection ended.
        """
        if self._state not in (_CONNECT_RECEIVED, _CONNECTED):
            return None
        assert self._connect is not None
        if self._connect.keepalive == 0:
            return None
        return self._last_packet_at + factor * self._connect.keepalive

    def can_publish(self, qos: QoS) -> bool:
        """Whether `publish(..., qos)` would be accepted now (state and inflight window)."""
        if self._state is not _CONNECTED:
            return False
        return qos == _QOS0 or len(self._outbound) < self._max_inflight

    def session_state(self) -> ProtocolSessionState:
        """What a persistent session must keep if this connection ends now."""
        return ProtocolSessionState(
            outbound=tuple(self._outbound.values()),
            inbound_awaiting_pubrel=frozenset(self._awaiting_pubrel),
            next_packet_id=self._next_id,
        )

    def statistics(self) -> ConnectionStatistics:
        """Current queue sizes."""
        return ConnectionStatistics(
            state=self._state,
            outbound_inflight=len(self._outbound),
            inbound_unacknowledged=len(self._unacked),
            inbound_awaiting_pubrel=len(self._awaiting_pubrel),
            bytes_to_send=len(self._out),
        )

    # ---------------------------------------------------------------- bytes in / out

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes read from the network; `b""` means the peer closed its side (EOF).

        `now` is a monotonic clock reading in seconds; it dates the packets these bytes
        complete (keepalive). Bytes arriving in CLOSED or ERROR are discarded.

        Raises:
            LocalProtocolError: data after EOF was already fed.
        """
        if self._state in (_CLOSED, _ERROR):
            return
        if self._eof:
            raise LocalProtocolError("receive_data() after EOF")
        self._now = now
        if data:
            self._reader.feed(data)
        else:
            self._eof = True

    def data_to_send(self) -> bytes:
        """Everything queued for the client since the last call, in order; then empty."""
        data = bytes(self._out)
        self._out.clear()
        return data

    def next_event(self) -> Event | None:
        """The next event, or None when more bytes are needed (or the connection ended).

        Raises:
            RemoteProtocolError: the peer broke the protocol; the state is now ERROR. If
                the CONNECT was not yet accepted and the error carries a `connack_code`,
                that CONNACK is already queued in `data_to_send()`.
            LocalProtocolError: called in CONNECT_RECEIVED (answer the CONNECT first).
        """
        state = self._state
        if state is _ERROR:
            assert self._error is not None
            raise self._error
        if state is _CLOSED:
            return None
        if state is _CONNECT_RECEIVED:
            raise LocalProtocolError("accept() or refuse() the CONNECT before next_event()")
        try:
            next_packet = self._reader.next_packet
            while True:
                packet = next_packet()
                if packet is None:
                    if self._eof:
                        self._state = _state.act(self._state, Action.EOF)
                        return Disconnected(graceful=False)
                    return None
                self._last_packet_at = self._now
                # The hot path (CONNECTED) uses the table's rows, resolved once at import.
                fast = _CONNECTED_DISPATCH.get(type(packet))
                if fast is not None and self._state is _CONNECTED:
                    self._state = fast[0]
                    event = fast[1](self, packet)
                else:
                    event = self._handle(packet)
                if event is not None:
                    return event
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise

    # ---------------------------------------------------------------- the CONNECT answer

    def accept(self, *, session_present: bool = False,
               resume: ProtocolSessionState | None = None,
               assigned_client_id: str | None = None,
               server_keep_alive: int | None = None,
               session_expiry_interval: int | None = None,
               properties: Properties = NO_PROPERTIES) -> None:
        """Queue CONNACK 0 (section 3.2); the state becomes CONNECTED.

        MQTT 5 (ignored for 3.1.1): the CONNACK also carries the session's own limits
        (Receive Maximum, Topic Alias Maximum, Maximum Packet Size: from the
        constructor, when they differ from the standard's defaults) and:
            assigned_client_id: required when the CONNECT's client id was empty
                (MQTT-3.2.2-16); `client_id` then returns it.
            server_keep_alive: replaces the client's keep alive (MQTT-3.2.2-21); the
                keepalive deadline follows it.
            session_expiry_interval: when the server grants a different one than asked.
            properties: any other CONNACK property the application announces (maximum
                QoS, retain available, wildcard / subscription identifier / shared
                subscription available, response information, server reference, reason
                string, user properties). Properties the session sets itself win.

        Args:
            session_present: the server holds a session for this client id
                (MQTT-3.2.2-2); must be False for clean_session=1 (MQTT-3.2.2-1).
            resume: that session's `ProtocolSessionState`: its unfinished outbound messages are
                re-sent right after the CONNACK with their original identifiers, PUBLISH
                with DUP=1, and PUBREL as is (MQTT-4.4.0-1, MQTT-3.3.1-1).

        Raises:
            LocalProtocolError: not in CONNECT_RECEIVED, or the flags contradict.
        """
        new_state = _state.act(self._state, Action.ACCEPT)
        assert self._connect is not None
        if self._connect.clean_session and (session_present or resume is not None):
            raise LocalProtocolError(
                "clean_session=1: session_present must be 0 and nothing resumed (MQTT-3.2.2-1)"
            )
        if resume is not None and not session_present:
            raise LocalProtocolError("resuming a session requires session_present (MQTT-3.2.2-2)")
        resumed: dict[int, Publish | PubRel] = {}
        if resume is not None:
            if not 1 <= resume.next_packet_id <= MAX_PACKET_ID:
                raise LocalProtocolError("resume.next_packet_id out of range")
            for entry in resume.outbound:
                # Encode now: a bad entry must fail before anything is queued.
                if isinstance(entry, Publish):
                    entry = replace(entry, dup=True)  # a re-delivery (MQTT-3.3.1-1)
                    if entry.qos == _QOS0:
                        raise LocalProtocolError("a resumed session holds no QoS 0 message")
                elif not isinstance(entry, PubRel):
                    raise LocalProtocolError(f"not a resumable packet: {entry!r}")
                if entry.packet_id in resumed:
                    raise LocalProtocolError(f"packet id {entry.packet_id} resumed twice")
                encode_into(entry, bytearray())
                resumed[entry.packet_id] = entry
        self._state = new_state
        self._send(ConnAck(ConnectReturnCode.ACCEPTED, session_present))
        if resume is None:
            return
        self._next_id = resume.next_packet_id
        self._awaiting_pubrel = set(resume.inbound_awaiting_pubrel)
        self._outbound = resumed
        for entry in resumed.values():
            self._send(entry)

    def refuse(self, code: int, *, reason_string: str | None = None,
               properties: Properties = NO_PROPERTIES) -> None:
        """Queue CONNACK `code` with session present 0 (MQTT-3.2.2-4); state CLOSED.

        `code` may be a 3.1.1 `ConnectReturnCode` or an MQTT 5 `reasons.ConnAckReason`:
        the session translates it for the client's version (`reasons.connack_reason`,
        `reasons.connect_return_code`: 0x8A banned is 0x05 in 3.1.1, 0x97 quota exceeded
        is 0x03). MQTT 5 only: `reason_string` and `properties` (server reference, user
        properties) ride on the CONNACK, unless the client asked for no problem
        information (reason string and user properties then dropped, MQTT-3.1.2-29).

        Raises:
            LocalProtocolError: not in CONNECT_RECEIVED, or `code` is ACCEPTED.
        """
        code = ConnectReturnCode(code)
        if code is ConnectReturnCode.ACCEPTED:
            raise LocalProtocolError("refuse() needs a non-zero return code; use accept()")
        self._state = _state.act(self._state, Action.REFUSE)
        self._send(ConnAck(code, session_present=False))

    # ---------------------------------------------------------------- other answers

    def acknowledge(self, packet_id: int, reason: int = 0, *,
                    reason_string: str | None = None,
                    user_properties: Sequence[tuple[str, str]] = ()) -> None:
        """Take over an inbound QoS 1/2 message: PUBACK (QoS 1) or PUBREC (QoS 2).

        Call it once the message is stored or routed (MQTT-4.3.2-2, MQTT-4.3.3-2). After
        the connection ended it sends nothing, but still records the QoS 2 identifier.

        MQTT 5: `reason` is a `reasons.PubAckReason` (0x00 success, 0x10 no matching
        subscribers, >= 0x80 refused: a refused QoS 2 message is not held for PUBREL),
        with an optional `reason_string` and `user_properties` (dropped when the client
        asked for no problem information, or when they would make the packet larger
        than the client's Maximum Packet Size). 3.1.1 sends the plain PUBACK/PUBREC
        whatever the reason: the application explains a refusal its own way.

        Raises:
            LocalProtocolError: no emitted, unacknowledged message has this identifier.
        """
        new_state = _state.act(self._state, _ACKNOWLEDGE)
        qos = self._unacked.pop(packet_id, None)
        if qos is None:
            raise LocalProtocolError(f"no inbound message {packet_id} awaits acknowledgement")
        self._state = new_state
        live = new_state is _CONNECTED
        if qos == _QOS1:
            if live:
                self._send(PubAck(packet_id))
        else:
            self._awaiting_pubrel.add(packet_id)
            if live:
                self._send(PubRec(packet_id))

    def grant(self, packet_id: int, return_codes: Sequence[int], *,
              reason_string: str | None = None,
              user_properties: Sequence[tuple[str, str]] = ()) -> None:
        """Queue the SUBACK for a `SubscribeReceived` (MQTT-3.8.4-1, -2, -5).

        Args:
            return_codes: one per filter, in order: granted QoS (at most the requested
                one, MQTT-3.9.3) or a refusal: `SUBACK_FAILURE` in 3.1.1, any
                `reasons.SubAckReason` >= 0x80 in MQTT 5 (3.1.1 turns every refusal
                into 0x80, so the application may pass MQTT 5 codes to both).
            reason_string, user_properties: MQTT 5 only, as for `acknowledge`.

        Raises:
            LocalProtocolError: unknown packet id, wrong count, or an invalid code.
        """
        _state.act(self._state, Action.GRANT)
        requested = self._pending_subscribe.get(packet_id)
        if requested is None:
            raise LocalProtocolError(f"no SUBSCRIBE {packet_id} awaits an answer")
        codes = tuple(return_codes)
        if len(codes) != len(requested):
            raise LocalProtocolError(
                f"SUBSCRIBE {packet_id} has {len(requested)} filters, got {len(codes)} codes"
            )
        for code, asked in zip(codes, requested, strict=True):
            if code != SUBACK_FAILURE and not 0 <= code <= asked:
                raise LocalProtocolError(f"return code {code!r} for a request of QoS {asked}")
        del self._pending_subscribe[packet_id]
        self._send(SubAck(packet_id, codes))

    def unsubscribed(self, packet_id: int, reason_codes: Sequence[int] | None = None, *,
                     reason_string: str | None = None,
                     user_properties: Sequence[tuple[str, str]] = ()) -> None:
        """Queue the UNSUBACK for an `UnsubscribeReceived` (MQTT-3.10.4-4, -5).

        MQTT 5: `reason_codes` one `reasons.UnsubAckReason` per filter, in order (None:
        all 0x00 success); `reason_string`, `user_properties` as for `acknowledge`.
        3.1.1 ignores them all.

        Raises:
            LocalProtocolError: no UNSUBSCRIBE with this id awaits an answer.
        """
        _state.act(self._state, Action.UNSUBSCRIBED)
        if packet_id not in self._pending_unsubscribe:
            raise LocalProtocolError(f"no UNSUBSCRIBE {packet_id} awaits an answer")
        self._pending_unsubscribe.discard(packet_id)
        self._send(UnsubAck(packet_id))

    def publish(self, topic: str, payload: bytes, qos: QoS, retain: bool = False, *,
                properties: Properties = NO_PROPERTIES) -> int | None:
        """Queue an outbound application message; return its packet id (None for QoS 0).

        The application delivers at the subscription's granted QoS (MQTT-3.8.4-6) and
        sets `retain` only for retained messages sent on a new subscription (MQTT-3.3.1-8,
        -9). QoS 1/2 messages hold an inflight slot until `DeliveryComplete`.

        MQTT 5: `properties` are the message's (payload format indicator, message expiry
        interval as what is left of it, content type, response topic, correlation data,
        user properties, subscription identifiers of the matching subscriptions); a
        topic alias in them is ignored, the session picks its own within the client's
        Topic Alias Maximum. The inflight window is the smaller of `max_inflight` and
        the client's Receive Maximum (`can_publish` says when it is full: keep the
        rest queued). A message whose packet would exceed the client's Maximum Packet
        Size is discarded as if delivered (MQTT-3.1.2-25): the call returns None and
        `statistics().dropped_too_large` counts it. 3.1.1 ignores `properties`.

        Raises:
            LocalProtocolError: not CONNECTED, or the inflight window is full
                (see `can_publish`).
        """
        _state.act(self._state, _PUBLISH)
        qos = QoS(qos)
        if qos == _QOS0:
            self._send(Publish(topic, payload, qos, retain))
            return None
        if len(self._outbound) >= self._max_inflight:
            raise LocalProtocolError(f"inflight window full ({self._max_inflight} messages)")
        packet_id = self._free_id()
        packet = Publish(topic, payload, qos, retain, dup=False, packet_id=packet_id)
        self._send(packet)  # first: a topic the codec refuses must leave no trace
        self._outbound[packet_id] = packet
        self._next_id = packet_id % MAX_PACKET_ID + 1
        return packet_id

    def disconnect(self, reason: int = 0, *, reason_string: str | None = None,
                   server_reference: str | None = None,
                   user_properties: Sequence[tuple[str, str]] = ()) -> None:
        """The server ends the connection with a reason (MQTT 5 section 3.14).

        MQTT 5: queues DISCONNECT `reason` (a `reasons.DisconnectReason` a server may
        send: 0x8E session taken over, 0x98 administrative action, 0x8D keep alive
        timeout, 0x96 message rate too high, 0x8B server shutting down, 0x9C use another
        server with `server_reference`, ...), then state CLOSED as `close()`. Only once
        connected (a refusal before that is `refuse`); otherwise it is `close()`.
        3.1.1 has no server DISCONNECT: it is `close()`, nothing is sent.

        Raises:
            LocalProtocolError: `reason` is not one a server may send.
        """
        self.close()

    def close(self) -> None:
        """The server ends the connection (keepalive expiry, revocation, shutdown).

        State CLOSED (ERROR stays ERROR). The will, if any, is the application's to
        publish. `session_state()` stays readable.
        """
        self._state = _state.act(self._state, Action.CLOSE)

    # ---------------------------------------------------------------- internals

    def _send(self, packet: Packet) -> None:
        encode_into(packet, self._out)

    def _fail(self, exc: RemoteProtocolError) -> None:
        if self._state is _AWAITING_CONNECT and exc.connack_code is not None:
            self._send(ConnAck(exc.connack_code, session_present=False))
        self._state = _ERROR
        self._error = exc

    def _free_id(self) -> int:
        # The window (< 65535) guarantees a free identifier exists.
        packet_id = self._next_id
        while packet_id in self._outbound:
            packet_id = packet_id % MAX_PACKET_ID + 1
        return packet_id

    def _handle(self, packet: Packet) -> Event | None:
        """Run one received packet through the table and its handler."""
        packet_type = _PACKET_TYPE[type(packet)]
        if packet_type is PacketType.CONNECT and self._state is _AWAITING_CONNECT:
            self._check_client_id(packet)  # before the transition: its CONNACK is 0x02
        self._state = _state.receive(self._state, packet_type)
        return _HANDLERS[packet_type](self, packet)

    def _check_client_id(self, connect: Connect) -> None:
        if connect.client_id == "" and not connect.clean_session:
            raise RemoteProtocolError(
                "empty client identifier with clean_session=0",
                rule="MQTT-3.1.3-8",
                connack_code=ConnectReturnCode.IDENTIFIER_REJECTED,
            )
        if len(connect.client_id.encode("utf-8")) > self._max_client_id_length:
            raise RemoteProtocolError(
                f"client identifier longer than {self._max_client_id_length} bytes",
                rule="MQTT-3.1.3-9",
                connack_code=ConnectReturnCode.IDENTIFIER_REJECTED,
            )

    def _on_connect(self, packet: Connect) -> Event:
        self._connect = packet
        return ConnectReceived(packet)

    def _on_publish(self, packet: Publish) -> Event | None:
        if packet.qos == _QOS0:
            return PublishReceived(packet)
        packet_id = packet.packet_id
        assert packet_id is not None
        held = self._unacked.get(packet_id)
        if packet_id in self._awaiting_pubrel:
            held = _QOS2
        if held is not None and held != packet.qos:
            raise RemoteProtocolError(
                f"packet id {packet_id} reused at QoS {packet.qos} while in flight at QoS {held}",
                rule="MQTT-2.3.1-2",
            )
        if packet.qos == _QOS2 and held is not None:
            # A re-sent QoS 2 PUBLISH: not delivered again (MQTT-4.3.3-2). Already
            # acknowledged: acknowledge again; still with the application: its
            # acknowledge() will send the one PUBREC.
            if packet_id in self._awaiting_pubrel:
                self._send(PubRec(packet_id))
            return None
        if held is None:
            if len(self._unacked) + len(self._awaiting_pubrel) >= self._max_inbound_inflight:
                raise RemoteProtocolError(
                    f"more than {self._max_inbound_inflight} inbound QoS 1/2 messages in flight"
                )
            self._unacked[packet_id] = packet.qos
        return PublishReceived(packet)

    def _on_puback(self, packet: PubAck) -> Event | None:
        entry = self._outbound.get(packet.packet_id)
        if entry is None:
            return None
        if not (isinstance(entry, Publish) and entry.qos == _QOS1):
            raise RemoteProtocolError(
                f"PUBACK for packet id {packet.packet_id}, which is a QoS 2 flow",
                rule="MQTT-4.8.0-1",
            )
        del self._outbound[packet.packet_id]
        return DeliveryComplete(packet.packet_id)

    def _on_pubrec(self, packet: PubRec) -> Event | None:
        packet_id = packet.packet_id
        entry = self._outbound.get(packet_id)
        if isinstance(entry, Publish):
            if entry.qos != _QOS2:
                raise RemoteProtocolError(
                    f"PUBREC for packet id {packet_id}, which is a QoS 1 message",
                    rule="MQTT-4.8.0-1",
                )
            # Ownership passed to the client: from now on PUBREL, never the PUBLISH again
            # (MQTT-4.3.3-1).
            self._outbound[packet_id] = PubRel(packet_id)
        self._send(PubRel(packet_id))
        return None

    def _on_pubrel(self, packet: PubRel) -> Event | None:
        packet_id = packet.packet_id
        if self._unacked.get(packet_id) == _QOS2:
            raise RemoteProtocolError(
                f"PUBREL for packet id {packet_id} before the server sent PUBREC",
                rule="MQTT-4.8.0-1",
            )
        self._awaiting_pubrel.discard(packet_id)
        self._send(PubComp(packet_id))
        return None

    def _on_pubcomp(self, packet: PubComp) -> Event | None:
        entry = self._outbound.get(packet.packet_id)
        if entry is None:
            return None
        if not isinstance(entry, PubRel):
            raise RemoteProtocolError(
                f"PUBCOMP for packet id {packet.packet_id} before its PUBREC/PUBREL",
                rule="MQTT-4.8.0-1",
            )
        del self._outbound[packet.packet_id]
        return DeliveryComplete(packet.packet_id)

    def _on_subscribe(self, packet: Subscribe) -> Event:
        self._pending_subscribe[packet.packet_id] = tuple(q for _, q in packet.subscriptions)
        return SubscribeReceived(packet.packet_id, packet.subscriptions)

    def _on_unsubscribe(self, packet: Unsubscribe) -> Event:
        self._pending_unsubscribe.add(packet.packet_id)
        return UnsubscribeReceived(packet.packet_id, packet.topic_filters)

    def _on_pingreq(self, packet: PingReq) -> None:
        self._send(PingResp())  # MQTT-3.12.4-1

    def _on_disconnect(self, packet: Disconnect) -> Event:
        return Disconnected(graceful=True)


_HANDLERS = {
    PacketType.CONNECT: ServerConnection._on_connect,
    PacketType.PUBLISH: ServerConnection._on_publish,
    PacketType.PUBACK: ServerConnection._on_puback,
    PacketType.PUBREC: ServerConnection._on_pubrec,
    PacketType.PUBREL: ServerConnection._on_pubrel,
    PacketType.PUBCOMP: ServerConnection._on_pubcomp,
    PacketType.SUBSCRIBE: ServerConnection._on_subscribe,
    PacketType.UNSUBSCRIBE: ServerConnection._on_unsubscribe,
    PacketType.PINGREQ: ServerConnection._on_pingreq,
    PacketType.DISCONNECT: ServerConnection._on_disconnect,
}

# The CONNECTED rows of the transition table, keyed by packet class for the hot path.
_CONNECTED_DISPATCH = {
    cls: (_state.RECEIVE[_CONNECTED, packet_type], _HANDLERS[packet_type])
    for cls, packet_type in _PACKET_TYPE.items()
    if (_CONNECTED, packet_type) in _state.RECEIVE
}
