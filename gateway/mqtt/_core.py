"""What every part of a `ServerConnection` shares: its state, limits and the send path.

`session.ServerConnection` is assembled from three concept modules on top of this core:
`_connect` (CONNECT and the application's accept/refuse), `_inbound` (what the client sends
and the application's acknowledge/grant/unsubscribed) and `_outbound` (what the server
sends: publish, its acknowledgement flows, the server's DISCONNECT). They share the state
kept here; none of them imports another.

The send path knows both protocol versions: `_send` encodes at the connection's level and,
in MQTT 5, never lets a packet exceed the client's Maximum Packet Size (MQTT-3.1.2-24):
`_send_optional` drops the reason string and user properties first (MQTT-3.4.2-2 and its
siblings) and only then the packet. `_fail` turns a `RemoteProtocolError` into the reply
the version allows: a CONNACK before CONNECT was accepted (3.1.1 or 5, by the code's
range), a DISCONNECT with the error's reason code once an MQTT 5 client is connected
(section 4.13), nothing for a connected 3.1.1 client (the connection just closes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ._state import ConnectionState
from .codec import DEFAULT_MAX_PACKET_SIZE, PacketReader, encode_into
from .errors import PROTOCOL_ERROR, RemoteProtocolError
from .events import ConnectionStatistics, ProtocolSessionState
from .packets import (
    PROTOCOL_LEVEL_3_1_1,
    PROTOCOL_LEVEL_5,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    Publish,
    PubRel,
    QoS,
)
from .properties import NO_PROPERTIES, Properties

MAX_PACKET_ID = 0xFFFF
MAX_RECEIVE_MAXIMUM = 0xFFFF
MAX_REASON_STRING = 256  # characters of our own error text sent as a reason string

# Enum members as module globals: attribute access on an Enum class costs ~10x a global
# read, and the per-packet paths run once per packet.
_AWAITING_CONNECT = ConnectionState.AWAITING_CONNECT
_CONNECTED = ConnectionState.CONNECTED
_ERROR = ConnectionState.ERROR


class SessionCore:
    """State and helpers shared by the parts of `ServerConnection` (see its docstring)."""

    def __init__(
        self,
        *,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        max_inflight: int = 20,
        max_client_id_length: int = 256,
        max_inbound_inflight: int = 1000,
        max_topic_levels: int = 32,
        max_topic_length: int = 1024,
        topic_alias_maximum: int = 16,
    ) -> None:
        if not 1 <= max_inflight <= MAX_PACKET_ID:
            raise ValueError(f"max_inflight must be in 1..{MAX_PACKET_ID}")
        if not 1 <= max_inbound_inflight <= 2 * MAX_PACKET_ID:
            raise ValueError("max_inbound_inflight must be positive")
        if max_client_id_length < 23:
            raise ValueError("max_client_id_length must be at least 23 (MQTT-3.1.3-5)")
        if max_topic_levels < 1 or max_topic_length < 1:
            raise ValueError("max_topic_levels and max_topic_length must be positive")
        if not 0 <= topic_alias_maximum <= 0xFFFF:
            raise ValueError("topic_alias_maximum must be in 0..65535")
        self._reader = PacketReader(max_packet_size=max_packet_size)
        self._max_packet_size = max_packet_size
        self._max_inflight = max_inflight
        self._max_client_id_length = max_client_id_length
        self._max_inbound_inflight = max_inbound_inflight
        self._max_topic_levels = max_topic_levels
        self._max_topic_length = max_topic_length
        self._topic_alias_maximum = topic_alias_maximum
        self._state = _AWAITING_CONNECT
        self._error: RemoteProtocolError | None = None
        self._out = bytearray()
        self._eof = False
        self._now = 0.0
        self._last_packet_at = 0.0
        self._connect: Connect | None = None
        self._client_id: str | None = None
        self._keepalive = 0
        # Outbound: packet id -> Publish awaiting PUBACK/PUBREC, or PubRel awaiting PUBCOMP.
        # A dict keeps first-send order; replacing a value keeps its position.
        self._outbound: dict[int, Publish | PubRel] = {}
        # Resumed entries not yet re-sent because the client's Receive Maximum was
        # reached (MQTT 5, section 4.9): sent one by one as flows complete.
        self._held: list[int] = []
        self._next_id = 1
        # Inbound: ids emitted and not yet acknowledged (-> their QoS), QoS 2 ids awaiting
        # PUBREL, and SUBSCRIBE/UNSUBSCRIBE awaiting the application's answer: the
        # requested QoS (or None for an UNSUBSCRIBE filter) of each filter emitted, and
        # the refusals the session made itself, by position (MQTT 5 topic limits).
        self._unacked: dict[int, QoS] = {}
        self._awaiting_pubrel: set[int] = set()
        self._pending_subscribe: dict[int, tuple[tuple[QoS, ...], dict[int, int]]] = {}
        self._pending_unsubscribe: dict[int, tuple[int, dict[int, int]]] = {}
        # MQTT 5, negotiated at CONNECT (defaults: what 3.1.1 implies).
        self._level = PROTOCOL_LEVEL_3_1_1
        self._v5 = False
        self._window = max_inflight
        self._client_max_packet = 0  # 0: no limit announced
        self._client_alias_max = 0
        self._problem_info = True
        self._connect_session_expiry = 0
        self._aliases_in: dict[int, str] = {}
        self._aliases_out: dict[str, int] = {}
        self._dropped_too_large = 0
        # What the CONNACK announced as unavailable (MQTT 5, 3.2.2.3): None = available.
        self._announced = NO_PROPERTIES

    # ---------------------------------------------------------------- inspection

    @property
    def state(self) -> ConnectionState:
        """The current `ConnectionState`."""
        return self._state

    @property
    def connect(self) -> Connect | None:
        """The CONNECT packet once received (client id, keepalive, will, credentials)."""
        return self._connect

    @property
    def protocol_level(self) -> int:
        """4 (3.1.1) until a level-5 CONNECT arrived, then 5."""
        return self._level

    @property
    def client_id(self) -> str | None:
        """The client identifier in force: the CONNECT's, or the one assigned by
        `accept(assigned_client_id=...)` (MQTT 5); None before CONNECT."""
        return self._client_id

    @property
    def receive_maximum(self) -> int:
        """The Receive Maximum this server announces (MQTT 5, 3.2.2.3.3)."""
        return min(self._max_inbound_inflight, MAX_RECEIVE_MAXIMUM)

    def keepalive_deadline(self, factor: float = 1.5) -> float | None:
        """When the server must disconnect if no further control packet arrives.

        The last complete packet's `now` + `factor` x keepalive (the client's, or the
        Server Keep Alive given to `accept`, MQTT-3.2.2-21); the standard's factor is 1.5
        (MQTT-3.1.2-24), a gateway may configure a larger one. None when the keepalive is
        0 (disabled), before CONNECT, and once the connection ended.
        """
        if self._state not in (ConnectionState.CONNECT_RECEIVED, _CONNECTED):
            return None
        if self._keepalive == 0:
            return None
        return self._last_packet_at + factor * self._keepalive

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
            dropped_too_large=self._dropped_too_large,
        )

    # ---------------------------------------------------------------- sending

    def _send(self, packet: Packet) -> bool:
        """Queue `packet`; False (nothing queued) if it exceeds the client's maximum."""
        out = self._out
        if not self._client_max_packet:
            encode_into(packet, out, self._level)
            return True
        size = len(out)
        encode_into(packet, out, self._level)
        if len(out) - size > self._client_max_packet:
            del out[size:]
            return False
        return True

    def _problem_properties(self, reason_string: str | None,
                            user_properties: Sequence[tuple[str, str]]) -> Properties:
        """A reason string and user properties, unless the client asked for no problem
        information (MQTT-3.1.2-29: not on packets other than PUBLISH, CONNACK,
        DISCONNECT)."""
        if not self._problem_info or (reason_string is None and not user_properties):
            return NO_PROPERTIES
        return Properties(reason_string=reason_string, user_properties=tuple(user_properties))

    def _send_optional(self, packet: Packet) -> None:
        """Queue an acknowledgement; if it is too large for the client, send it without
        its reason string and user properties (MQTT-3.4.2-2 and siblings)."""
        if not self._send(packet):
            props = packet.properties  # type: ignore[union-attr]
            slim = replace(packet, properties=replace(  # type: ignore[type-var]
                props, reason_string=None, user_properties=()))
            if not self._send(slim):
                encode_into(slim, self._out, self._level)  # a bare answer is owed anyway

    def _fail(self, exc: RemoteProtocolError) -> None:
        code = exc.connack_code
        if self._state is _AWAITING_CONNECT and code is not None:
            if code >= 0x80:  # an MQTT 5 reason code: the CONNECT was level 5
                reason = Properties(reason_string=str(exc)[:MAX_REASON_STRING])
                size = len(self._out)
                encode_into(ConnAck(code, False, reason), self._out, PROTOCOL_LEVEL_5)
                if self._client_max_packet and len(self._out) - size > self._client_max_packet:
                    # Too large for the client with its reason string (MQTT-3.2.2-19).
                    del self._out[size:]
                    encode_into(ConnAck(code, False), self._out, PROTOCOL_LEVEL_5)
            else:
                encode_into(ConnAck(code, False), self._out)
        elif self._v5 and self._state is not _AWAITING_CONNECT:
            # CONNECTED, or CLOSED by the very DISCONNECT found faulty (section 4.13).
            self._send_disconnect(exc.reason_code, str(exc)[:MAX_REASON_STRING])
        self._state = _ERROR
        self._error = exc

    def _send_disconnect(self, reason: int, reason_string: str | None,
                         properties: Properties = NO_PROPERTIES) -> None:
        if reason_string is not None:
            properties = replace(properties, reason_string=reason_string)
        if not self._send(Disconnect(reason, properties)):
            self._send(Disconnect(reason))

    # ---------------------------------------------------------------- topic limits

    def _over_limits(self, topic: str) -> str | None:
        """Why `topic` (a name or filter) exceeds the configured limits, or None."""
        if len(topic) > self._max_topic_length // 4 and len(
                topic.encode("utf-8")) > self._max_topic_length:
            return f"topic of more than {self._max_topic_length} bytes"
        if topic.count("/") >= self._max_topic_levels:
            return f"topic of more than {self._max_topic_levels} levels"
        return None

    def _check_topic_name(self, topic: str) -> None:
        """Raise (3.1.1: close; 5: DISCONNECT 0x90) for a topic name over the limits."""
        why = self._over_limits(topic)
        if why is not None:
            raise RemoteProtocolError(f"{why}: {topic[:64]!r}...", reason_code=0x90)

    def _release_held(self) -> None:
        """A flow ended: re-send held resumed entries while the window allows."""
        outbound = self._outbound
        sent = len(outbound) - sum(1 for packet_id in self._held if packet_id in outbound)
        window = self._window if self._v5 else MAX_PACKET_ID  # 3.1.1 re-sends them all
        while self._held and sent < window:
            packet_id = self._held.pop(0)
            entry = self._outbound.get(packet_id)
            if entry is None:
                continue
            if self._send(entry):
                sent += 1
            else:  # too large for this client (MQTT-3.1.2-25): as if delivered
                del self._outbound[packet_id]
                self._dropped_too_large += 1

    def _free_id(self) -> int:
        # The window (< 65535) guarantees a free identifier exists.
        packet_id = self._next_id
        while packet_id in self._outbound:
            packet_id = packet_id % MAX_PACKET_ID + 1
        return packet_id


__all__ = ["MAX_PACKET_ID", "PROTOCOL_ERROR", "SessionCore"]
