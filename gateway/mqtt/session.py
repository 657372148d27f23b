"""The server side of one MQTT 3.1.1 or 5.0 network connection, sans-IO (h11/h2-shaped).

Theory of operation (OASIS MQTT 3.1.1 and 5.0, sections 3 and 4):

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

One listener serves both versions: the CONNECT's protocol level decides (the reader
switches itself to MQTT 5 on a level-5 CONNECT; levels other than 4 and 5 get CONNACK
0x01). The concepts live in their own modules, assembled here: `_connect` (CONNECT checks,
accept, refuse), `_inbound` (PUBLISH, PUBREL, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT
from the client; acknowledge, grant, unsubscribed), `_outbound` (publish, PUBACK, PUBREC,
PUBCOMP, the server's DISCONNECT) on the shared `_core` (state, limits, the send path).
Packet identifiers of the two directions have separate spaces (section 2.3.1).

MQTT 5 errors: a peer's violation once connected is answered with DISCONNECT and the
error's reason code (0x81 malformed, 0x82 protocol error, 0x93 receive maximum exceeded,
0x94 topic alias invalid, 0x95 packet too large, 0x90 topic name invalid) before the
state becomes ERROR; before CONNACK it is a CONNACK with that code (0x85 client id, 0x8C
authentication method, 0x81, 0x82, 0x90). 3.1.1 keeps closing the connection (after a
CONNACK 0x01 or 0x02 where the standard asks for one).

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
- `statistics()`, the `connect`, `protocol_level` and `client_id` properties and
  `keepalive_deadline(factor=...)` were added.
- `receive_data(b"")` means EOF, as with trio's `receive_some()`: never feed an empty
  chunk otherwise. EOF before CONNECT yields `Disconnected(graceful=False)`.
"""

from __future__ import annotations

from . import _state
from ._connect import ConnectHandling
from ._core import MAX_PACKET_ID
from ._inbound import InboundFlows
from ._outbound import OutboundFlows
from ._state import Action, ConnectionState
from .errors import LocalProtocolError, RemoteProtocolError
from .events import ConnectionStatistics, Disconnected, Event, ProtocolSessionState
from .packets import PACKET_TYPE as _PACKET_TYPE
from .packets import Packet, PacketType

_AWAITING_CONNECT = ConnectionState.AWAITING_CONNECT
_CONNECT_RECEIVED = ConnectionState.CONNECT_RECEIVED
_CONNECTED = ConnectionState.CONNECTED
_CLOSED = ConnectionState.CLOSED
_ERROR = ConnectionState.ERROR


class ServerConnection(ConnectHandling, InboundFlows, OutboundFlows):
    """The server's half of one MQTT 3.1.1 or 5.0 connection: bytes in, events out.

    Args:
        max_packet_size: largest packet accepted, checked from the fixed header before the
            body is buffered (`PacketTooLarge`; MQTT 5: DISCONNECT 0x95); announced to an
            MQTT 5 client as its Maximum Packet Size.
        max_inflight: outbound QoS 1/2 messages awaiting acknowledgement at once (MQTT 5:
            also at most the client's Receive Maximum).
        max_client_id_length: longest client identifier in UTF-8 bytes; longer gets
            CONNACK 0x02 (MQTT-3.1.3-9; MQTT 5: 0x85). At least 23 (MQTT-3.1.3-5).
        max_inbound_inflight: inbound QoS 1/2 messages held at once (awaiting the
            application's acknowledgement, or QoS 2 awaiting PUBREL); more is an error
            (MQTT 5: announced as Receive Maximum, up to 65535; more is DISCONNECT 0x93).
        max_topic_levels: most levels in a topic name or filter (will topic included);
            more closes a 3.1.1 connection, and is refused in MQTT 5 with 0x90 (name:
            DISCONNECT, or CONNACK for a will topic) or 0x8F (filter: in the SUBACK or
            UNSUBACK, for that filter alone).
        max_topic_length: most UTF-8 bytes in a topic name or filter, likewise.
        topic_alias_maximum: MQTT 5 topic aliases the client may set (announced in the
            CONNACK when above 0); a higher alias is DISCONNECT 0x94.
    """

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
                that CONNACK is already queued in `data_to_send()`; an MQTT 5 client
                already connected has its DISCONNECT queued there.
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

    def _handle(self, packet: Packet) -> Event | None:
        """Run one received packet through the table and its handler."""
        packet_type = _PACKET_TYPE[type(packet)]
        if packet_type is PacketType.CONNECT and self._state is _AWAITING_CONNECT:
            self._check_connect(packet)  # type: ignore[arg-type]  # before the transition
        self._state = _state.receive(self._state, packet_type)
        return _HANDLERS[packet_type](self, packet)


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
    PacketType.AUTH: ServerConnection._on_auth,
}

# The CONNECTED rows of the transition table, keyed by packet class for the hot path.
_CONNECTED_DISPATCH = {
    cls: (_state.RECEIVE[_CONNECTED, packet_type], _HANDLERS[packet_type])
    for cls, packet_type in _PACKET_TYPE.items()
    if (_CONNECTED, packet_type) in _state.RECEIVE
}

__all__ = ["MAX_PACKET_ID", "ConnectionStatistics", "ProtocolSessionState", "ServerConnection"]
