"""MQTT 5.0 packets to bytes (OASIS MQTT 5.0, chapter 3).

Theory of operation: as `encoder` for 3.1.1, one function per packet type appends the
packet's wire form to a bytearray (but CONNECT, whose layout the versions share and which
`encoder` writes at both levels), here with the MQTT 5 variable headers: property lists
(`properties.encode_properties`, which checks that each property is allowed in the packet)
and reason codes (checked against the packet's enum in `reason_codes`). Where the standard lets
a sender shorten a packet (an acknowledgement or DISCONNECT with reason 0x00 and no
properties, section 3.4.2.1 and 3.14.2.1), the short form is written. Every encoder refuses
with `LocalProtocolError` what `decoder5` would refuse; `encoder.encode_into` restores the
caller's buffer on failure.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import LocalProtocolError, RemoteProtocolError
from .packets import (
    Auth,
    ConnAck,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from .properties import (
    AUTH,
    CONNACK,
    DISCONNECT,
    NO_PROPERTIES,
    PUBLISH,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
    encode_properties,
)
from .reason_codes import ALLOWED_CODES
from .topics import check_outgoing, split_shared, validate_topic_filter, validate_topic_name
from .wire import (
    encode_frame,
    encode_packet_id,
    encode_remaining_length,
    encode_utf8,
    utf8_bytes,
)


def _check_filter(topic_filter: str) -> bool:
    """Validate a filter; return whether it is a shared subscription."""
    try:
        if split_shared(topic_filter) is not None:
            return True
        validate_topic_filter(topic_filter)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(str(exc)) from None
    return False


def _reason(code: int, what: str) -> int:
    if code not in ALLOWED_CODES[what]:
        raise LocalProtocolError(f"{what} cannot carry reason code {code!r}")
    return int(code)


def _encode_connack(packet: ConnAck, out: bytearray) -> None:
    code = _reason(packet.return_code, "CONNACK")
    if packet.session_present and code:
        raise LocalProtocolError("a refusing CONNACK must not say session present (MQTT-3.2.2-6)")
    body = bytearray((1 if packet.session_present else 0, code))
    encode_properties(packet.properties, CONNACK, body)
    encode_frame(0x20, body, out)


def encode_publish(packet: Publish, out: bytearray) -> None:
    """Append a level-5 PUBLISH; an empty topic needs a topic alias (3.3.2.3.4)."""
    qos = packet.qos
    topic = packet.topic
    properties = packet.properties
    if topic or properties.topic_alias is None:
        check_outgoing(validate_topic_name, topic)
    if properties.response_topic is not None:
        check_outgoing(validate_topic_name, properties.response_topic)  # MQTT-3.3.2-14
    topic_bytes = utf8_bytes(topic)
    if qos == 0:
        if packet.packet_id is not None:
            raise LocalProtocolError("a QoS 0 PUBLISH carries no packet identifier")
        if packet.dup:
            raise LocalProtocolError("a QoS 0 PUBLISH must not set DUP (MQTT-3.3.1-2)")
        packet_id = b""
    elif qos == 1 or qos == 2:
        packet_id = encode_packet_id(packet.packet_id, "a QoS 1 or 2 PUBLISH")
    else:
        raise LocalProtocolError(f"PUBLISH QoS {qos} is not 0, 1 or 2")
    if properties is NO_PROPERTIES:
        props = b"\x00"
    else:
        props = bytearray()
        encode_properties(properties, PUBLISH, props)
    payload = packet.payload
    out.append(0x30 | (0x08 if packet.dup else 0) | (qos << 1) | (0x01 if packet.retain else 0))
    encode_remaining_length(2 + len(topic_bytes) + len(packet_id) + len(props) + len(payload), out)
    out += len(topic_bytes).to_bytes(2, "big")
    out += topic_bytes
    out += packet_id
    out += props
    out += payload


def _ack_encoder(first_byte: int, name: str) -> Callable[[Packet, bytearray], None]:
    def encode_ack(packet: Packet, out: bytearray) -> None:
        packet_id = encode_packet_id(packet.packet_id, name)  # type: ignore[union-attr]
        code = _reason(packet.reason_code, name)  # type: ignore[union-attr]
        properties = packet.properties  # type: ignore[union-attr]
        if properties is NO_PROPERTIES:
            if code == 0:
                out += bytes((first_byte, 2)) + packet_id
            else:
                out += bytes((first_byte, 3)) + packet_id + bytes((code,))
            return
        body = bytearray(packet_id)
        body.append(code)
        encode_properties(properties, name, body)
        encode_frame(first_byte, body, out)

    encode_ack.__name__ = f"_encode_{name.lower()}5"
    return encode_ack


def _encode_subscribe(packet: Subscribe, out: bytearray) -> None:
    if not packet.subscriptions:
        raise LocalProtocolError("SUBSCRIBE needs at least one topic filter (MQTT-3.8.3-2)")
    if packet.options and len(packet.options) != len(packet.subscriptions):
        raise LocalProtocolError("SUBSCRIBE needs one options value per filter, or none")
    body = bytearray(encode_packet_id(packet.packet_id, "SUBSCRIBE"))
    encode_properties(packet.properties, SUBSCRIBE, body)
    for index, (topic_filter, qos) in enumerate(packet.subscriptions):
        shared = _check_filter(topic_filter)
        if qos not in (0, 1, 2):
            raise LocalProtocolError(f"requested QoS {qos} is not 0, 1 or 2")
        options = packet.options_of(index)
        if options.no_local and shared:
            raise LocalProtocolError("no local on a shared subscription (MQTT-3.8.3-4)")
        if options.retain_handling not in (0, 1, 2):
            raise LocalProtocolError(f"retain handling {options.retain_handling} is not 0..2")
        encode_utf8(topic_filter, body)
        body.append(int(qos) | (0x04 if options.no_local else 0)
                    | (0x08 if options.retain_as_published else 0)
                    | (int(options.retain_handling) << 4))
    encode_frame(0x82, body, out)


def _encode_suback(packet: SubAck, out: bytearray) -> None:
    if not packet.return_codes:
        raise LocalProtocolError("SUBACK needs at least one reason code")
    body = bytearray(encode_packet_id(packet.packet_id, "SUBACK"))
    encode_properties(packet.properties, SUBACK, body)
    for code in packet.return_codes:
        body.append(_reason(code, "SUBACK"))
    encode_frame(0x90, body, out)


def _encode_unsubscribe(packet: Unsubscribe, out: bytearray) -> None:
    if not packet.topic_filters:
        raise LocalProtocolError("UNSUBSCRIBE needs at least one topic filter (MQTT-3.10.3-2)")
    body = bytearray(encode_packet_id(packet.packet_id, "UNSUBSCRIBE"))
    encode_properties(packet.properties, UNSUBSCRIBE, body)
    for topic_filter in packet.topic_filters:
        _check_filter(topic_filter)
        encode_utf8(topic_filter, body)
    encode_frame(0xA2, body, out)


def _encode_unsuback(packet: UnsubAck, out: bytearray) -> None:
    if not packet.reason_codes:
        raise LocalProtocolError("an MQTT 5 UNSUBACK needs one reason code per filter")
    body = bytearray(encode_packet_id(packet.packet_id, "UNSUBACK"))
    encode_properties(packet.properties, UNSUBACK, body)
    for code in packet.reason_codes:
        body.append(_reason(code, "UNSUBACK"))
    encode_frame(0xB0, body, out)


def _reason_encoder(first_byte: int, name: str, kind: str
                    ) -> Callable[[Packet, bytearray], None]:
    def encode_reason(packet: Packet, out: bytearray) -> None:
        code = _reason(packet.reason_code, name)  # type: ignore[union-attr]
        properties = packet.properties  # type: ignore[union-attr]
        if properties is NO_PROPERTIES:
            out += bytes((first_byte, 0) if code == 0 else (first_byte, 1, code))
            return
        body = bytearray((code,))
        encode_properties(properties, kind, body)
        encode_frame(first_byte, body, out)

    encode_reason.__name__ = f"_encode_{name.lower()}5"
    return encode_reason


ENCODERS: dict[type, Callable[[Packet, bytearray], None]] = {
    ConnAck: _encode_connack,  # type: ignore[dict-item]
    Publish: encode_publish,  # type: ignore[dict-item]
    PubAck: _ack_encoder(0x40, "PUBACK"),
    PubRec: _ack_encoder(0x50, "PUBREC"),
    PubRel: _ack_encoder(0x62, "PUBREL"),
    PubComp: _ack_encoder(0x70, "PUBCOMP"),
    Subscribe: _encode_subscribe,  # type: ignore[dict-item]
    SubAck: _encode_suback,  # type: ignore[dict-item]
    Unsubscribe: _encode_unsubscribe,  # type: ignore[dict-item]
    UnsubAck: _encode_unsuback,  # type: ignore[dict-item]
    PingReq: lambda packet, out: out.extend(b"\xc0\x00"),
    PingResp: lambda packet, out: out.extend(b"\xd0\x00"),
    Disconnect: _reason_encoder(0xE0, "DISCONNECT", DISCONNECT),
    Auth: _reason_encoder(0xF0, "AUTH", AUTH),
}
"""MQTT 5 encoders by packet class (CONNECT: `encoder`)."""

__all__ = ["ENCODERS", "encode_publish"]
