"""Outbound flows of a `ServerConnection`: what the server sends and the client's
acknowledgements of it (MQTT 3.1.1 sections 3.3-3.7, 4.3; MQTT 5 also 3.3.2.3.4, 4.9, 3.14).

Outbound QoS 1/2 messages take the next free packet identifier and hold one slot of the
inflight window until PUBACK (QoS 1) or PUBCOMP (QoS 2) arrives: then `DeliveryComplete`.
The window is `max_inflight`, and in MQTT 5 never more than the client's Receive Maximum
(MQTT-3.3.4-9): `can_publish` says when it is full, and the application keeps the rest
queued. MQTT 5 also:
- a PUBACK or PUBREC with a reason >= 0x80 ends the flow there (section 4.3.3): the
  message is the client's refusal, reported in `DeliveryComplete.reason_code`;
- topic aliases: the session gives each new topic an alias while the client's Topic Alias
  Maximum allows, sends the topic with its alias once, then the alias alone;
- Maximum Packet Size: a PUBLISH larger than the client's maximum is discarded as if
  delivered (MQTT-3.1.2-25) and counted in `statistics().dropped_too_large`;
- `disconnect(reason)` sends the server's DISCONNECT (section 3.14) before closing.

Acknowledgements for identifiers the server does not know (decisions, the standard is
silent): PUBACK and PUBCOMP are ignored (a duplicate, or an acknowledgement for a session
the server no longer holds); PUBREC is answered with PUBREL so that the client can finish
its flow (MQTT 5: reason 0x92 packet identifier not found). An acknowledgement of the
wrong kind for a known identifier (PUBACK for a QoS 2 message, PUBREC for QoS 1, PUBCOMP
before PUBREC) is a protocol violation (MQTT-4.8.0-1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from . import _state
from ._core import MAX_PACKET_ID, SessionCore
from ._state import Action, ConnectionState
from .errors import LocalProtocolError, RemoteProtocolError
from .events import DeliveryComplete, Event
from .packets import PubAck, PubComp, Publish, PubRec, PubRel, QoS
from .properties import NO_PROPERTIES, Properties, without
from .reason_codes import SERVER_SENDS_NEVER, DisconnectCode

_QOS0 = QoS.AT_MOST_ONCE
_QOS1 = QoS.AT_LEAST_ONCE
_QOS2 = QoS.EXACTLY_ONCE
_PUBLISH = Action.PUBLISH
_CONNECTED = ConnectionState.CONNECTED
_DISCONNECT_CODES = frozenset(int(c) for c in DisconnectCode) - SERVER_SENDS_NEVER


class OutboundFlows(SessionCore):
    """The server-to-client side of `ServerConnection`."""

    def can_publish(self, qos: QoS) -> bool:
        """Whether `publish(..., qos)` would be accepted now (state and inflight window)."""
        if self._state is not _CONNECTED:
            return False
        return qos == _QOS0 or len(self._outbound) < self._window

    def publish(self, topic: str, payload: bytes, qos: QoS, retain: bool = False, *,
                properties: Properties = NO_PROPERTIES) -> int | None:
        """Queue an outbound application message; return its packet id (None for QoS 0).

        The application delivers at the subscription's granted QoS (MQTT-3.8.4-6) and
        sets `retain` only for retained messages sent on a new subscription (MQTT-3.3.1-8,
        -9). QoS 1/2 messages hold an inflight slot until `DeliveryComplete`.

        MQTT 5: `properties` are the message's (payload format indicator, message expiry
        interval as what is left of it, content type, response topic, correlation data,
        user properties, subscription identifiers of the matching subscriptions); a topic
        alias in them is ignored, the session picks its own. The inflight window is the
        smaller of `max_inflight` and the client's Receive Maximum. A message whose packet
        would exceed the client's Maximum Packet Size is discarded as if delivered
        (MQTT-3.1.2-25): the call returns None and `statistics().dropped_too_large` counts
        it. 3.1.1 ignores `properties`.

        Raises:
            LocalProtocolError: not CONNECTED, the inflight window is full (see
                `can_publish`), or the message cannot be encoded (its topic, ...).
        """
        _state.act(self._state, _PUBLISH)
        qos = QoS(qos)
        if not self._v5:
            properties = NO_PROPERTIES
        elif properties.topic_alias is not None:
            properties = without(properties, "topic_alias")
        if qos == _QOS0:
            self._send_publish(Publish(topic, payload, qos, retain, False, None, properties))
            return None
        if len(self._outbound) >= self._window:
            raise LocalProtocolError(f"inflight window full ({self._window} messages)")
        packet_id = self._free_id()
        packet = Publish(topic, payload, qos, retain, False, packet_id, properties)
        if not self._send_publish(packet):  # first: a topic the codec refuses leaves no trace
            return None
        self._outbound[packet_id] = packet
        self._next_id = packet_id % MAX_PACKET_ID + 1
        return packet_id

    def _send_publish(self, packet: Publish) -> bool:
        """Send with a topic alias when one is (or can be) set; False if discarded as too
        large for the client (counted)."""
        if not self._client_alias_max:
            if self._send(packet):
                return True
            self._dropped_too_large += 1
            return False
        topic = packet.topic
        alias = self._aliases_out.get(topic)
        if alias is not None:
            wire = replace(packet, topic="", properties=replace(packet.properties,
                                                                topic_alias=alias))
        elif len(self._aliases_out) < self._client_alias_max:
            alias = len(self._aliases_out) + 1
            wire = replace(packet, properties=replace(packet.properties, topic_alias=alias))
        else:
            wire = packet
        if not self._send(wire):
            self._dropped_too_large += 1
            return False
        if alias is not None:
            self._aliases_out[topic] = alias  # the client knows it now
        return True

    def _on_puback(self, packet: PubAck) -> Event | None:
        entry = self._outbound.get(packet.packet_id)
        if entry is None:
            return None
        if not (isinstance(entry, Publish) and entry.qos == _QOS1):
            raise RemoteProtocolError(
                f"PUBACK for packet id {packet.packet_id}, which is a QoS 2 flow",
                rule="MQTT-4.8.0-1", reason_code=0x82,
            )
        del self._outbound[packet.packet_id]
        if self._held:
            self._release_held()
        return DeliveryComplete(packet.packet_id, packet.reason_code, packet.properties)

    def _on_pubrec(self, packet: PubRec) -> Event | None:
        packet_id = packet.packet_id
        entry = self._outbound.get(packet_id)
        if isinstance(entry, Publish):
            if entry.qos != _QOS2:
                raise RemoteProtocolError(
                    f"PUBREC for packet id {packet_id}, which is a QoS 1 message",
                    rule="MQTT-4.8.0-1", reason_code=0x82,
                )
            if packet.reason_code >= 0x80:
                # The client refused the message: the flow ends here (MQTT 5, 4.3.3).
                del self._outbound[packet_id]
                if self._held:
                    self._release_held()
                return DeliveryComplete(packet_id, packet.reason_code, packet.properties)
            # Ownership passed to the client: from now on PUBREL, never the PUBLISH again
            # (MQTT-4.3.3-1).
            self._outbound[packet_id] = PubRel(packet_id)
        elif entry is None and self._v5:
            if packet.reason_code < 0x80:
                self._send(PubRel(packet_id, 0x92))  # packet identifier not found
            return None
        self._send(PubRel(packet_id))
        return None

    def _on_pubcomp(self, packet: PubComp) -> Event | None:
        entry = self._outbound.get(packet.packet_id)
        if entry is None:
            return None
        if not isinstance(entry, PubRel):
            raise RemoteProtocolError(
                f"PUBCOMP for packet id {packet.packet_id} before its PUBREC/PUBREL",
                rule="MQTT-4.8.0-1", reason_code=0x82,
            )
        del self._outbound[packet.packet_id]
        if self._held:
            self._release_held()
        return DeliveryComplete(packet.packet_id, packet.reason_code, packet.properties)

    def disconnect(self, reason: int = 0, *, reason_string: str | None = None,
                   server_reference: str | None = None,
                   user_properties: Sequence[tuple[str, str]] = ()) -> None:
        """The server ends the connection with a reason (MQTT 5 section 3.14).

        MQTT 5, once CONNECTED: queues DISCONNECT `reason` (a `reason_codes.DisconnectCode`
        a server may send: 0x8E session taken over, 0x98 administrative action, 0x8D keep
        alive timeout, 0x96 message rate too high, 0x8B server shutting down, 0x9C use
        another server with `server_reference`, ...), with the reason string and user
        properties (always allowed on DISCONNECT, but dropped if the packet would exceed
        the client's Maximum Packet Size), then state CLOSED as `close()`. In any other
        state, and always in 3.1.1 (which has no server DISCONNECT), it is `close()`.

        Raises:
            LocalProtocolError: `reason` is not one a server may send.
        """
        if reason not in _DISCONNECT_CODES:
            raise LocalProtocolError(f"{reason!r} is not a DISCONNECT reason a server sends")
        if self._v5 and self._state is _CONNECTED:
            props = Properties(server_reference=server_reference,
                               user_properties=tuple(user_properties))
            self._send_disconnect(int(reason), reason_string, props)
        self.close()

    def close(self) -> None:
        """The server ends the connection (keepalive expiry, revocation, shutdown).

        State CLOSED (ERROR stays ERROR). The will, if any, is the application's to
        publish. `session_state()` stays readable.
        """
        self._state = _state.act(self._state, Action.CLOSE)
