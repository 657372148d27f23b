"""MQTT 3.1.1 packets to bytes (OASIS MQTT 3.1.1, chapters 2 and 3); MQTT 5 in `encoder5`.

Theory of operation: each packet type has one function that appends its wire form to a
bytearray: fixed header (type and flags, section 2.2), Remaining Length (2.2.3), variable
header and payload (chapter 3). The variable parts are built first when their length is not
known in advance, so each packet is written once. `encode_into` lets a caller batch many
packets (a round of PUBACKs) into one buffer and one write.

Every encoder refuses, with `LocalProtocolError`, a packet the standard forbids sending or
that `codec.PacketReader` would refuse (wildcards in a topic name, packet identifier 0, QoS 0
with DUP, a refusing CONNACK with session present, ...), so a conforming peer accepts what
we send. It leaves the caller's buffer as it was. `Connect.protocol_level` is written as
given, so that tests can play a client of another protocol level, and chooses the form of
the CONNECT (one function here, since the two versions share its layout). `encode_into(...,
protocol_level=5)` writes any other packet in its MQTT 5 form (`encoder5`); at level 4 a
packet whose MQTT 5 fields (reason code, properties, options, AUTH) are not at their
defaults is refused.
"""

from __future__ import annotations

from collections.abc import Callable

from . import encoder5
from .errors import LocalProtocolError
from .packets import (
    DEFAULT_SUBSCRIPTION_OPTIONS,
    PROTOCOL_LEVEL_5,
    SUBACK_FAILURE,
    ConnAck,
    Connect,
    ConnectReturnCode,
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
from .properties import CONNECT, NO_PROPERTIES, WILL, Properties, encode_properties
from .topics import check_outgoing, validate_topic_filter, validate_topic_name
from .wire import (
    encode_binary,
    encode_frame,
    encode_packet_id,
    encode_remaining_length,
    encode_u16,
    encode_utf8,
    utf8_bytes,
)

_RETURN_CODES = tuple(ConnectReturnCode)
_VALID_SUBACK_CODES = frozenset((0, 1, 2, SUBACK_FAILURE))


def _no_5(properties: Properties, what: str, extra: object = None) -> None:
    if (properties is not NO_PROPERTIES and properties != NO_PROPERTIES) or extra:
        raise LocalProtocolError(f"a 3.1.1 {what} carries no MQTT 5 reason code or properties")


def _encode_connect(packet: Connect, out: bytearray) -> None:
    # One layout at both levels (section 3.1, MQTT 5 section 3.1), as `decoder` reads it:
    # MQTT 5 adds the CONNECT's and the will's property lists and lets a password come
    # without a user name (3.1.2.9).
    v5 = packet.protocol_level == PROTOCOL_LEVEL_5
    if not v5:
        _no_5(packet.properties, "CONNECT", packet.will is not None and packet.will.properties)
    body = bytearray()
    encode_utf8(packet.protocol_name, body)
    if not 0 <= packet.protocol_level <= 0xFF:
        raise LocalProtocolError(f"protocol level {packet.protocol_level} is not a byte")
    body.append(packet.protocol_level)
    cflags = 0x02 if packet.clean_session else 0
    will = packet.will
    if will is not None:
        if will.qos not in (0, 1, 2):
            raise LocalProtocolError(f"will QoS {will.qos} is not 0, 1 or 2")
        cflags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if packet.username is not None:
        cflags |= 0x80
    if packet.password is not None:
        if packet.username is None and not v5:
            raise LocalProtocolError("a password needs a username (MQTT-3.1.2-22)")
        cflags |= 0x40
    body.append(cflags)
    encode_u16(packet.keepalive, body)
    if v5:
        encode_properties(packet.properties, CONNECT, body)
    encode_utf8(packet.client_id, body)
    if will is not None:
        if v5:
            if will.properties.response_topic is not None:
                check_outgoing(validate_topic_name, will.properties.response_topic)
            encode_properties(will.properties, WILL, body)
        check_outgoing(validate_topic_name, will.topic)
        encode_utf8(will.topic, body)
        encode_binary(will.payload, body)
    if packet.username is not None:
        encode_utf8(packet.username, body)
    if packet.password is not None:
        encode_binary(packet.password, body)
    encode_frame(0x10, body, out)


def _encode_connack(packet: ConnAck, out: bytearray) -> None:
    _no_5(packet.properties, "CONNACK")
    code = packet.return_code
    if not 0 <= code < len(_RETURN_CODES):
        raise LocalProtocolError(f"CONNACK return code {code} is reserved")
    if packet.session_present and code:
        raise LocalProtocolError("a refusing CONNACK must not say session present (MQTT-3.2.2-4)")
    out += bytes((0x20, 2, 1 if packet.session_present else 0, code))


def _encode_publish(packet: Publish, out: bytearray) -> None:
    if packet.properties is not NO_PROPERTIES:
        _no_5(packet.properties, "PUBLISH")
    qos = packet.qos
    topic = packet.topic
    check_outgoing(validate_topic_name, topic)
    topic_bytes = utf8_bytes(topic)
    if qos == 0:
        if packet.packet_id is not None:
            raise LocalProtocolError("a QoS 0 PUBLISH carries no packet identifier")
        if packet.dup:
            raise LocalProtocolError("a QoS 0 PUBLISH must not set DUP (MQTT-3.3.1-2)")
        id_size = 0
    elif qos == 1 or qos == 2:
        packet_id = encode_packet_id(packet.packet_id, "a QoS 1 or 2 PUBLISH")
        id_size = 2
    else:
        raise LocalProtocolError(f"PUBLISH QoS {qos} is not 0, 1 or 2")
    payload = packet.payload
    out.append(0x30 | (0x08 if packet.dup else 0) | (qos << 1) | (0x01 if packet.retain else 0))
    encode_remaining_length(2 + len(topic_bytes) + id_size + len(payload), out)
    out += len(topic_bytes).to_bytes(2, "big")
    out += topic_bytes
    if id_size:
        out += packet_id
    out += payload


def _ack_encoder(first_byte: int, name: str) -> Callable[[Packet, bytearray], None]:
    def encode_ack(packet: Packet, out: bytearray) -> None:
        packet_id = packet.packet_id  # type: ignore[union-attr]
        if type(packet_id) is not int or not 0 < packet_id <= 0xFFFF:
            encode_packet_id(packet_id, name)  # raises
        if packet.properties is not NO_PROPERTIES or packet.reason_code:  # type: ignore[union-attr]
            _no_5(packet.properties, name, packet.reason_code)  # type: ignore[union-attr]
        out += bytes((first_byte, 2, packet_id >> 8, packet_id & 0xFF))

    encode_ack.__name__ = f"_encode_{name.lower()}"
    return encode_ack


def _encode_subscribe(packet: Subscribe, out: bytearray) -> None:
    _no_5(packet.properties, "SUBSCRIBE",
          any(o != DEFAULT_SUBSCRIPTION_OPTIONS for o in packet.options))
    if not packet.subscriptions:
        raise LocalProtocolError("SUBSCRIBE needs at least one topic filter (MQTT-3.8.3-3)")
    body = bytearray(encode_packet_id(packet.packet_id, "SUBSCRIBE"))
    for topic_filter, qos in packet.subscriptions:
        check_outgoing(validate_topic_filter, topic_filter)
        if qos not in (0, 1, 2):
            raise LocalProtocolError(f"requested QoS {qos} is not 0, 1 or 2")
        encode_utf8(topic_filter, body)
        body.append(qos)
    encode_frame(0x82, body, out)


def _encode_suback(packet: SubAck, out: bytearray) -> None:
    _no_5(packet.properties, "SUBACK")
    if not packet.return_codes:
        raise LocalProtocolError("SUBACK needs at least one return code")
    for code in packet.return_codes:
        if code not in _VALID_SUBACK_CODES:
            raise LocalProtocolError(f"SUBACK return code {code} is reserved (MQTT-3.9.3-2)")
    body = bytearray(encode_packet_id(packet.packet_id, "SUBACK"))
    body += bytes(packet.return_codes)
    encode_frame(0x90, body, out)


def _encode_unsubscribe(packet: Unsubscribe, out: bytearray) -> None:
    _no_5(packet.properties, "UNSUBSCRIBE")
    if not packet.topic_filters:
        raise LocalProtocolError("UNSUBSCRIBE needs at least one topic filter (MQTT-3.10.3-2)")
    body = bytearray(encode_packet_id(packet.packet_id, "UNSUBSCRIBE"))
    for topic_filter in packet.topic_filters:
        check_outgoing(validate_topic_filter, topic_filter)
        encode_utf8(topic_filter, body)
    encode_frame(0xA2, body, out)


def _encode_unsuback(packet: UnsubAck, out: bytearray) -> None:
    _no_5(packet.properties, "UNSUBACK", packet.reason_codes)
    out += b"\xb0\x02" + encode_packet_id(packet.packet_id, "UNSUBACK")


def _encode_disconnect(packet: Disconnect, out: bytearray) -> None:
    _no_5(packet.properties, "DISCONNECT", packet.reason_code)
    out += b"\xe0\x00"


def _empty_encoder(first_byte: int) -> Callable[[Packet, bytearray], None]:
    wire = bytes((first_byte, 0))

    def encode_empty(packet: Packet, out: bytearray) -> None:
        out += wire

    return encode_empty


_ENCODERS: dict[type, Callable[[Packet, bytearray], None]] = {
    Connect: _encode_connect,  # type: ignore[dict-item]
    ConnAck: _encode_connack,  # type: ignore[dict-item]
    Publish: _encode_publish,  # type: ignore[dict-item]
    PubAck: _ack_encoder(0x40, "PUBACK"),
    PubRec: _ack_encoder(0x50, "PUBREC"),
    PubRel: _ack_encoder(0x62, "PUBREL"),
    PubComp: _ack_encoder(0x70, "PUBCOMP"),
    Subscribe: _encode_subscribe,  # type: ignore[dict-item]
    SubAck: _encode_suback,  # type: ignore[dict-item]
    Unsubscribe: _encode_unsubscribe,  # type: ignore[dict-item]
    UnsubAck: _encode_unsuback,  # type: ignore[dict-item]
    PingReq: _empty_encoder(0xC0),
    PingResp: _empty_encoder(0xD0),
    Disconnect: _encode_disconnect,  # type: ignore[dict-item]
}
_ENCODERS_BY_LEVEL = {
    4: _ENCODERS,
    PROTOCOL_LEVEL_5: {**encoder5.ENCODERS, Connect: _encode_connect},
}


def encode_into(packet: Packet, out: bytearray, protocol_level: int = 4) -> None:
    """Append the wire form of `packet` to `out` (batch many packets into one buffer).

    `protocol_level` 4 (3.1.1) or 5 chooses the form; a CONNECT follows its own
    `protocol_level` whatever this says. Raises `LocalProtocolError` for a packet the
    standard forbids sending, leaving `out` as it was.
    """
    encoders = _ENCODERS_BY_LEVEL.get(protocol_level)
    if encoders is None:
        raise LocalProtocolError(f"no encoding for protocol level {protocol_level!r}")
    encoder = encoders.get(type(packet))
    if encoder is None:
        raise LocalProtocolError(f"not an MQTT packet: {packet!r}")
    size = len(out)
    try:
        encoder(packet, out)
    except LocalProtocolError:
        del out[size:]
        raise


def encode(packet: Packet, protocol_level: int = 4) -> bytes:
    """The wire form of `packet`. Raises `LocalProtocolError` as `encode_into` does."""
    out = bytearray()
    encode_into(packet, out, protocol_level)
    return bytes(out)


__all__ = ["encode", "encode_into"]
