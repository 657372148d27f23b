"""Inbound flows of a `ServerConnection`: what the client sends, and the application's
answers to it (MQTT 3.1.1 sections 3.3-3.14, 4.3; MQTT 5 the same plus 3.3.2.3.4, 4.9).

Inbound QoS 1/2 messages are held until the application acknowledges them; QoS 2
identifiers then until PUBREL, and a PUBLISH re-sent with such an identifier is answered
(PUBREC) but not emitted again (MQTT-4.3.3-2). At most `max_inbound_inflight` are held: one
more is a protocol error, in MQTT 5 the DISCONNECT 0x93 receive maximum exceeded (that
number is the Receive Maximum the CONNACK announced, section 4.9).

MQTT 5 adds, all checked before the application sees anything:
- topic aliases (3.3.2.3.4): an alias above the Topic Alias Maximum we announced is
  DISCONNECT 0x94; an empty topic with an alias never set is a protocol error (0x82); the
  emitted `Publish` has the full topic and no alias;
- a client PUBLISH carrying a Subscription Identifier is a protocol error (MQTT-3.3.4-6);
- DISCONNECT: only reasons a client may send; a Session Expiry Interval other than 0 when
  the CONNECT's was 0 is a protocol error (3.14.2.2.2);
- topic names over the configured limits: DISCONNECT 0x90 (3.1.1: close); topic filters
  over them: SUBACK / UNSUBACK 0x8F for that filter, merged by the session into the
  application's answer (3.1.1: close).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from . import _state
from ._core import SessionCore
from ._state import Action
from .errors import LocalProtocolError, RemoteProtocolError, protocol_error
from .events import (
    Disconnected,
    Event,
    PublishReceived,
    SubscribeReceived,
    UnsubscribeReceived,
)
from .packets import (
    SUBACK_FAILURE,
    Auth,
    Disconnect,
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
from .properties import NO_PROPERTIES, without
from .reason_codes import ALLOWED_CODES, CLIENT_SENDS
from .topics import SHARE_PREFIX

_QOS1 = QoS.AT_LEAST_ONCE
_QOS2 = QoS.EXACTLY_ONCE
_ACKNOWLEDGE = Action.ACKNOWLEDGE
_CONNECTED = _state.ConnectionState.CONNECTED
_PUBACK_CODES = ALLOWED_CODES["PUBACK"]
_SUBACK_CODES = ALLOWED_CODES["SUBACK"]
_UNSUBACK_CODES = ALLOWED_CODES["UNSUBACK"]
_TOPIC_FILTER_INVALID = 0x8F


class InboundFlows(SessionCore):
    """The client-to-server side of `ServerConnection`."""

    def _on_publish(self, packet: Publish) -> Event | None:
        if self._v5:
            packet = self._resolve_v5(packet)
        else:
            self._check_topic_name(packet.topic)
        if packet.qos == QoS.AT_MOST_ONCE:
            return PublishReceived(packet)
        packet_id = packet.packet_id
        assert packet_id is not None
        held = self._unacked.get(packet_id)
        if packet_id in self._awaiting_pubrel:
            held = _QOS2
        if held is not None and held != packet.qos:
            raise RemoteProtocolError(
                f"packet id {packet_id} reused at QoS {packet.qos} while in flight at QoS {held}",
                rule="MQTT-2.3.1-2", reason_code=0x82,
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
                    f"more than {self._max_inbound_inflight} inbound QoS 1/2 messages in flight",
                    reason_code=0x93,
                )
            self._unacked[packet_id] = packet.qos
        return PublishReceived(packet)

    def _resolve_v5(self, packet: Publish) -> Publish:
        """Apply an MQTT 5 PUBLISH's topic alias and check what 3.1.1 does not have."""
        announced = self._announced
        if announced is not NO_PROPERTIES:
            if announced.maximum_qos is not None and packet.qos > announced.maximum_qos:
                raise RemoteProtocolError(
                    f"PUBLISH at QoS {packet.qos} above the maximum QoS "
                    f"{announced.maximum_qos}", rule="MQTT-3.2.2-11", reason_code=0x9B)
            if packet.retain and announced.retain_available == 0:
                raise RemoteProtocolError("retained PUBLISH while retain is unavailable",
                                          rule="MQTT-3.2.2-14", reason_code=0x9A)
        props = packet.properties
        if props.subscription_identifiers:
            raise protocol_error("a client PUBLISH carries a subscription identifier",
                                 rule="MQTT-3.3.4-6")
        alias = props.topic_alias
        if alias is None:
            self._check_topic_name(packet.topic)
            return packet
        if alias > self._topic_alias_maximum:
            raise RemoteProtocolError(
                f"topic alias {alias} above the maximum of {self._topic_alias_maximum}",
                rule="MQTT-3.3.2-9", reason_code=0x94,
            )
        topic = packet.topic
        if topic:
            self._check_topic_name(topic)
            self._aliases_in[alias] = topic
        else:
            topic = self._aliases_in.get(alias)  # type: ignore[assignment]
            if topic is None:
                raise protocol_error(f"topic alias {alias} used before it was set (3.3.2.3.4)")
        return replace(packet, topic=topic, properties=without(props, "topic_alias"))

    def _on_pubrel(self, packet: PubRel) -> Event | None:
        packet_id = packet.packet_id
        if self._unacked.get(packet_id) == _QOS2:
            raise RemoteProtocolError(
                f"PUBREL for packet id {packet_id} before the server sent PUBREC",
                rule="MQTT-4.8.0-1", reason_code=0x82,
            )
        if packet_id in self._awaiting_pubrel:
            self._awaiting_pubrel.discard(packet_id)
            self._send(PubComp(packet_id))
        else:
            # MQTT-4.3.3-2 still wants a PUBCOMP; MQTT 5 says why (3.7.2.1).
            self._send(PubComp(packet_id, 0x92 if self._v5 else 0))
        return None

    def _on_subscribe(self, packet: Subscribe) -> Event | None:
        subscriptions = packet.subscriptions
        refused: dict[int, int] = {}
        if any(self._over_limits(f) for f, _ in subscriptions):
            if not self._v5:
                raise RemoteProtocolError(f"SUBSCRIBE: {self._first_over(subscriptions)}",
                                          reason_code=_TOPIC_FILTER_INVALID)
            refused = {i: _TOPIC_FILTER_INVALID for i, (f, _) in enumerate(subscriptions)
                       if self._over_limits(f)}
        if self._v5 and self._announced is not NO_PROPERTIES:
            self._refuse_unavailable(packet, refused)
        kept = [i for i in range(len(subscriptions)) if i not in refused]
        self._pending_subscribe[packet.packet_id] = (
            tuple(subscriptions[i][1] for i in kept), refused)
        if not kept:
            self._finish_subscribe(packet.packet_id, ())
            return None
        ids = packet.properties.subscription_identifiers
        return SubscribeReceived(
            packet.packet_id,
            tuple(subscriptions[i] for i in kept),
            tuple(packet.options[i] for i in kept) if packet.options else (),
            ids[0] if ids else None,
            without(packet.properties, "subscription_identifiers"),
        )

    def _refuse_unavailable(self, packet: Subscribe, refused: dict[int, int]) -> None:
        """What the CONNACK said is unavailable (3.2.2.3.11-13)."""
        announced = self._announced
        if (announced.subscription_identifier_available == 0
                and packet.properties.subscription_identifiers):
            raise RemoteProtocolError("subscription identifier while unavailable",
                                      reason_code=0xA1)
        for i, (topic_filter, _) in enumerate(packet.subscriptions):
            if i in refused:
                continue
            if announced.shared_subscription_available == 0 and topic_filter.startswith(
                    SHARE_PREFIX):
                refused[i] = 0x9E
            elif announced.wildcard_subscription_available == 0 and (
                    "+" in topic_filter or "#" in topic_filter):
                refused[i] = 0xA2

    def _first_over(self, subscriptions: Sequence[tuple[str, QoS]]) -> str | None:
        return next((self._over_limits(f) for f, _ in subscriptions if self._over_limits(f)),
                    None)

    def _on_unsubscribe(self, packet: Unsubscribe) -> Event | None:
        filters = packet.topic_filters
        refused: dict[int, int] = {}
        if any(self._over_limits(f) for f in filters):
            if not self._v5:
                raise RemoteProtocolError("UNSUBSCRIBE: topic filter over the limits",
                                          reason_code=_TOPIC_FILTER_INVALID)
            refused = {i: _TOPIC_FILTER_INVALID for i, f in enumerate(filters)
                       if self._over_limits(f)}
        kept = tuple(f for i, f in enumerate(filters) if i not in refused)
        self._pending_unsubscribe[packet.packet_id] = (len(kept), refused)
        if not kept:
            self._finish_unsubscribe(packet.packet_id, ())
            return None
        return UnsubscribeReceived(packet.packet_id, kept, packet.properties)

    def _on_pingreq(self, packet: PingReq) -> None:
        self._send(PingResp())  # MQTT-3.12.4-1

    def _on_disconnect(self, packet: Disconnect) -> Event:
        if self._v5:
            if packet.reason_code not in CLIENT_SENDS:
                raise protocol_error(
                    f"DISCONNECT reason {packet.reason_code:#04x} is not one a client sends")
            expiry = packet.properties.session_expiry_interval
            if expiry and not self._connect_session_expiry:
                raise protocol_error(
                    "DISCONNECT sets a session expiry interval after CONNECT's 0 (3.14.2.2.2)")
        return Disconnected(True, packet.reason_code, packet.properties)

    def _on_auth(self, packet: Auth) -> None:  # pragma: no cover - the table refuses AUTH
        raise protocol_error("AUTH without enhanced authentication (4.12)")

    # ---------------------------------------------------------------- the answers

    def acknowledge(self, packet_id: int, reason: int = 0, *,
                    reason_string: str | None = None,
                    user_properties: Sequence[tuple[str, str]] = ()) -> None:
        """Take over an inbound QoS 1/2 message: PUBACK (QoS 1) or PUBREC (QoS 2).

        Call it once the message is stored or routed (MQTT-4.3.2-2, MQTT-4.3.3-2). After
        the connection ended it sends nothing, but still records the QoS 2 identifier.

        MQTT 5: `reason` is a `reason_codes.PubAckCode` (0x00 success, 0x10 no matching
        subscribers, >= 0x80 refused: a refused QoS 2 message is not held for PUBREL,
        section 4.3.3), with an optional `reason_string` and `user_properties` (dropped
        when the client asked for no problem information, or when they would make the
        packet larger than the client's Maximum Packet Size). 3.1.1 sends the plain
        PUBACK/PUBREC whatever the reason: the application explains a refusal its own way.

        Raises:
            LocalProtocolError: no emitted, unacknowledged message has this identifier,
                or `reason` is not a PUBACK/PUBREC reason code.
        """
        new_state = _state.act(self._state, _ACKNOWLEDGE)
        if reason not in _PUBACK_CODES:
            raise LocalProtocolError(f"{reason!r} is not a PUBACK/PUBREC reason code")
        qos = self._unacked.pop(packet_id, None)
        if qos is None:
            raise LocalProtocolError(f"no inbound message {packet_id} awaits acknowledgement")
        self._state = new_state
        live = new_state is _CONNECTED
        if not self._v5:
            if qos == _QOS1:
                if live:
                    self._send(PubAck(packet_id))
            else:
                self._awaiting_pubrel.add(packet_id)
                if live:
                    self._send(PubRec(packet_id))
            return
        if qos == _QOS2 and reason < 0x80:
            self._awaiting_pubrel.add(packet_id)
        if live:
            cls = PubAck if qos == _QOS1 else PubRec
            self._send_optional(cls(packet_id, int(reason),
                                    self._problem_properties(reason_string, user_properties)))

    def grant(self, packet_id: int, return_codes: Sequence[int], *,
              reason_string: str | None = None,
              user_properties: Sequence[tuple[str, str]] = ()) -> None:
        """Queue the SUBACK for a `SubscribeReceived` (MQTT-3.8.4-1, -2, -5).

        Args:
            return_codes: one per filter of the event, in order: granted QoS (at most the
                requested one, MQTT-3.9.3) or a refusal: `SUBACK_FAILURE` in 3.1.1, any
                `reason_codes.SubAckCode` >= 0x80 in MQTT 5 (3.1.1 turns every refusal into
                0x80, so the application may pass MQTT 5 codes to both). Filters the
                session refused itself (MQTT 5 topic limits) get their 0x8F in place.
            reason_string, user_properties: MQTT 5 only, as for `acknowledge`.

        Raises:
            LocalProtocolError: unknown packet id, wrong count, or an invalid code.
        """
        _state.act(self._state, Action.GRANT)
        pending = self._pending_subscribe.get(packet_id)
        if pending is None:
            raise LocalProtocolError(f"no SUBSCRIBE {packet_id} awaits an answer")
        requested = pending[0]
        codes = tuple(return_codes)
        if len(codes) != len(requested):
            raise LocalProtocolError(
                f"SUBSCRIBE {packet_id} has {len(requested)} filters, got {len(codes)} codes"
            )
        for code, asked in zip(codes, requested, strict=True):
            if code not in _SUBACK_CODES or (code < 0x80 and code > asked):
                raise LocalProtocolError(f"return code {code!r} for a request of QoS {asked}")
        self._finish_subscribe(packet_id, codes, reason_string, user_properties)

    def _finish_subscribe(self, packet_id: int, codes: tuple[int, ...],
                          reason_string: str | None = None,
                          user_properties: Sequence[tuple[str, str]] = ()) -> None:
        refused = self._pending_subscribe.pop(packet_id)[1]
        if not self._v5:
            self._send(SubAck(packet_id, tuple(
                int(c) if c < 0x80 else SUBACK_FAILURE for c in codes)))
            return
        merged = _merge(codes, refused)
        self._send_optional(SubAck(packet_id, merged,
                                   self._problem_properties(reason_string, user_properties)))

    def unsubscribed(self, packet_id: int, reason_codes: Sequence[int] | None = None, *,
                     reason_string: str | None = None,
                     user_properties: Sequence[tuple[str, str]] = ()) -> None:
        """Queue the UNSUBACK for an `UnsubscribeReceived` (MQTT-3.10.4-4, -5).

        MQTT 5: `reason_codes` one `reason_codes.UnsubAckCode` per filter of the event, in
        order (None: all 0x00 success); `reason_string`, `user_properties` as for
        `acknowledge`. 3.1.1 ignores them all.

        Raises:
            LocalProtocolError: no UNSUBSCRIBE with this id awaits an answer, or the
                codes do not fit it.
        """
        _state.act(self._state, Action.UNSUBSCRIBED)
        pending = self._pending_unsubscribe.get(packet_id)
        if pending is None:
            raise LocalProtocolError(f"no UNSUBSCRIBE {packet_id} awaits an answer")
        codes = tuple(reason_codes) if reason_codes is not None else (0,) * pending[0]
        if len(codes) != pending[0] or any(c not in _UNSUBACK_CODES for c in codes):
            raise LocalProtocolError(f"UNSUBSCRIBE {packet_id}: bad reason codes {codes!r}")
        self._finish_unsubscribe(packet_id, codes, reason_string, user_properties)

    def _finish_unsubscribe(self, packet_id: int, codes: tuple[int, ...],
                            reason_string: str | None = None,
                            user_properties: Sequence[tuple[str, str]] = ()) -> None:
        refused = self._pending_unsubscribe.pop(packet_id)[1]
        if not self._v5:
            self._send(UnsubAck(packet_id))
            return
        self._send_optional(UnsubAck(packet_id, _merge(codes, refused),
                                     self._problem_properties(reason_string, user_properties)))


def _merge(codes: tuple[int, ...], refused: dict[int, int]) -> tuple[int, ...]:
    """The application's codes with the session's own refusals put back in place."""
    if not refused:
        return tuple(int(c) for c in codes)
    answer = iter(codes)
    total = len(codes) + len(refused)
    return tuple(refused[i] if i in refused else int(next(answer)) for i in range(total))
