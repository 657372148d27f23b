"""MQTT 5.0 packet bodies to values (OASIS MQTT 5.0, chapter 3).

Theory of operation: `codec.PacketReader` frames packets (the fixed header is the same in
both versions) and, once a CONNECT at protocol level 5 has been read, decodes bodies with
the functions of `DECODERS` here instead of the 3.1.1 ones. Each takes the fixed header's
flags and a memoryview of exactly the packet's body and returns a packet value, checking
what the standard says of a packet in isolation: property lists (`properties`), reason
codes allowed per packet, subscription options' reserved bits (MQTT-3.8.3-5), retain
handling 3 and no local on a shared subscription (protocol errors, MQTT-3.8.3-4), shared
subscription syntax (4.8.2), an empty topic name without a topic alias (3.3.2.3.4).
A violation raises `RemoteProtocolError` whose `reason_code` is 0x81
(malformed) or 0x82 (protocol error): the session sends it in a DISCONNECT (or, for a
CONNECT, a CONNACK).
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import PROTOCOL_ERROR, RemoteProtocolError, protocol_error
from .packets import (
    PROTOCOL_LEVEL_5,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    QoS,
    RetainHandling,
    SubAck,
    Subscribe,
    SubscriptionOptions,
    UnsubAck,
    Unsubscribe,
    Will,
)
from .properties import (
    AUTH,
    CONNACK,
    CONNECT,
    DISCONNECT,
    NO_PROPERTIES,
    PUBLISH,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
    WILL,
    decode_properties,
)
from .reason_codes import ALLOWED_CODES, ConnAckCode
from .topics import has_control_character, split_shared, validate_topic_filter, validate_topic_name
from .wire import decode_binary, decode_u8, decode_u16, decode_utf8

_QOS = (QoS.AT_MOST_ONCE, QoS.AT_LEAST_ONCE, QoS.EXACTLY_ONCE)
_HANDLING = tuple(RetainHandling)
_DEFAULT_OPTIONS = SubscriptionOptions()


def _packet_id(body: memoryview, offset: int, what: str) -> tuple[int, int]:
    packet_id, offset = decode_u16(body, offset)
    if packet_id == 0:
        raise RemoteProtocolError(f"{what} with packet identifier 0", rule="MQTT-2.3.1-1")
    return packet_id, offset


def _reason(code: int, what: str) -> int:
    if code not in ALLOWED_CODES[what]:
        raise RemoteProtocolError(f"{what} reason code {code:#04x} is not one it may carry")
    return code


def check_identifier(text: str, what: str, rule: str | None = None) -> None:
    """Refuse control characters in a client id or user name (section 1.5.4)."""
    if has_control_character(text):
        raise RemoteProtocolError(f"{what} contains a control character", rule=rule)


def check_response_topic(topic: str) -> None:
    """A Response Topic is a topic name: no wildcards (MQTT-3.3.2-14), not empty."""
    try:
        validate_topic_name(topic)
    except RemoteProtocolError as exc:
        raise protocol_error(f"response topic: {exc}", rule="MQTT-3.3.2-14") from None


def decode_connect5(body: memoryview, i: int, cflags: int, keepalive: int) -> Connect:
    """The rest of a level-5 CONNECT after keep alive: properties, then the payload
    (sections 3.1.2.11 and 3.1.3). Errors carry `connack_code` = their reason code."""
    try:
        return _connect5(body, i, cflags, keepalive)
    except RemoteProtocolError as exc:
        if exc.connack_code is None:
            exc.connack_code = exc.reason_code
        raise


def _connect5(body: memoryview, i: int, cflags: int, keepalive: int) -> Connect:
    properties, i = decode_properties(body, i, CONNECT)
    client_id, i = decode_utf8(body, i)
    if has_control_character(client_id):
        raise RemoteProtocolError(
            "client identifier contains a control character",
            rule="MQTT-3.1.3-8", connack_code=ConnAckCode.CLIENT_IDENTIFIER_NOT_VALID,
        )
    will = None
    if cflags & 0x04:
        will_properties, i = decode_properties(body, i, WILL)
        if will_properties.response_topic is not None:
            check_response_topic(will_properties.response_topic)
        will_topic, i = decode_utf8(body, i)
        validate_topic_name(will_topic)
        will_payload, i = decode_binary(body, i)
        will = Will(will_topic, will_payload, _QOS[(cflags >> 3) & 0x03], bool(cflags & 0x20),
                    will_properties)
    username = password = None
    if cflags & 0x80:
        username, i = decode_utf8(body, i)
        check_identifier(username, "user name")
    if cflags & 0x40:
        password, i = decode_binary(body, i)
    if i != len(body):
        raise RemoteProtocolError(f"CONNECT has {len(body) - i} bytes after its last field")
    return Connect(client_id, bool(cflags & 0x02), keepalive, will, username, password,
                   "MQTT", PROTOCOL_LEVEL_5, properties)


def _decode_connack(flags: int, body: memoryview) -> ConnAck:
    ack_flags, i = decode_u8(body, 0)
    code, i = decode_u8(body, i)
    if ack_flags & 0xFE:
        raise RemoteProtocolError("CONNACK reserved acknowledge flags are set (3.2.2.1.1)")
    _reason(code, "CONNACK")
    if ack_flags and code:
        raise RemoteProtocolError(
            "CONNACK refuses the connection yet says a session is present", rule="MQTT-3.2.2-6"
        )
    properties, i = decode_properties(body, i, CONNACK)
    if i != len(body):
        raise RemoteProtocolError("CONNACK has bytes after its properties")
    return ConnAck(code, bool(ack_flags), properties)


def publish_flags(flags: int) -> tuple[int, bool]:
    """QoS and DUP from a PUBLISH's fixed header (section 3.3.1, the same in 3.1.1)."""
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise RemoteProtocolError("PUBLISH with QoS 3", rule="MQTT-3.3.1-4")
    dup = bool(flags & 0x08)
    if dup and not qos:
        raise RemoteProtocolError("PUBLISH with QoS 0 and DUP set", rule="MQTT-3.3.1-2")
    return qos, dup


def decode_publish(flags: int, body: memoryview) -> Publish:
    """A level-5 PUBLISH (section 3.3): topic, packet id if QoS > 0, properties, payload."""
    qos, dup = publish_flags(flags)
    topic, i = decode_utf8(body, 0)
    packet_id = None
    if qos:
        packet_id, i = _packet_id(body, i, "PUBLISH")
    properties, i = decode_properties(body, i, PUBLISH)
    if properties.response_topic is not None:
        check_response_topic(properties.response_topic)
    if topic:
        validate_topic_name(topic)
    elif properties.topic_alias is None:
        raise protocol_error("PUBLISH with an empty topic name and no topic alias (3.3.2.3.4)")
    return Publish(topic, bytes(body[i:]), _QOS[qos], bool(flags & 0x01), dup, packet_id,
                   properties)


def _ack_decoder(cls: type, name: str) -> Callable[[int, memoryview], Packet]:
    def decode(flags: int, body: memoryview) -> Packet:
        packet_id, i = _packet_id(body, 0, name)
        if len(body) == 2:
            return cls(packet_id)  # reason 0x00, no properties (3.4.2.1)
        code = _reason(body[2], name)
        if len(body) == 3:
            return cls(packet_id, code)
        properties, i = decode_properties(body, 3, name)
        if i != len(body):
            raise RemoteProtocolError(f"{name} has bytes after its properties")
        return cls(packet_id, code, properties)

    decode.__name__ = f"_decode_{name.lower()}5"
    return decode


def _decode_subscribe(flags: int, body: memoryview) -> Subscribe:
    # Section 3.8: packet id, properties, then (topic filter, subscription options) pairs.
    packet_id, i = _packet_id(body, 0, "SUBSCRIBE")
    properties, i = decode_properties(body, i, SUBSCRIBE)
    subscriptions = []
    options = []
    end = len(body)
    while i < end:
        topic_filter, i = decode_utf8(body, i)
        byte, i = decode_u8(body, i)
        if byte & 0xC0:
            raise RemoteProtocolError(
                f"SUBSCRIBE options {byte:#04x}: reserved bits set", rule="MQTT-3.8.3-5"
            )
        qos = byte & 0x03
        if qos == 3:
            raise RemoteProtocolError("SUBSCRIBE requested QoS 3 (3.8.3.1)")
        handling = (byte >> 4) & 0x03
        if handling == 3:
            raise protocol_error("SUBSCRIBE retain handling 3 (3.8.3.1)")
        no_local = bool(byte & 0x04)
        shared = split_shared(topic_filter)
        if shared is None:
            validate_topic_filter(topic_filter)
        elif no_local:
            raise protocol_error(
                f"no local on shared subscription {topic_filter!r}", rule="MQTT-3.8.3-4"
            )
        subscriptions.append((topic_filter, _QOS[qos]))
        options.append(
            SubscriptionOptions(no_local, bool(byte & 0x08), _HANDLING[handling])
            if byte & 0x3C else _DEFAULT_OPTIONS
        )
    if not subscriptions:
        raise protocol_error("SUBSCRIBE without a topic filter", rule="MQTT-3.8.3-2")
    if all(o is _DEFAULT_OPTIONS for o in options):
        options = []
    return Subscribe(packet_id, tuple(subscriptions), tuple(options), properties)


def _decode_suback(flags: int, body: memoryview) -> SubAck:
    packet_id, i = _packet_id(body, 0, "SUBACK")
    properties, i = decode_properties(body, i, SUBACK)
    codes = tuple(body[i:])
    if not codes:
        raise RemoteProtocolError("SUBACK without a reason code (3.9.3)")
    for code in codes:
        _reason(code, "SUBACK")
    return SubAck(packet_id, codes, properties)


def _decode_unsubscribe(flags: int, body: memoryview) -> Unsubscribe:
    packet_id, i = _packet_id(body, 0, "UNSUBSCRIBE")
    properties, i = decode_properties(body, i, UNSUBSCRIBE)
    filters = []
    end = len(body)
    while i < end:
        topic_filter, i = decode_utf8(body, i)
        if split_shared(topic_filter) is None:
            validate_topic_filter(topic_filter)
        filters.append(topic_filter)
    if not filters:
        raise protocol_error("UNSUBSCRIBE without a topic filter", rule="MQTT-3.10.3-2")
    return Unsubscribe(packet_id, tuple(filters), properties)


def _decode_unsuback(flags: int, body: memoryview) -> UnsubAck:
    packet_id, i = _packet_id(body, 0, "UNSUBACK")
    properties, i = decode_properties(body, i, UNSUBACK)
    codes = tuple(body[i:])
    if not codes:
        raise RemoteProtocolError("UNSUBACK without a reason code (3.11.3)")
    for code in codes:
        _reason(code, "UNSUBACK")
    return UnsubAck(packet_id, codes, properties)


def _reason_and_properties(cls: type, name: str, kind: str
                           ) -> Callable[[int, memoryview], Packet]:
    default = cls()

    def decode(flags: int, body: memoryview) -> Packet:
        if not body:
            return default  # reason 0x00, no properties (3.14.2.1, 3.15.2.1)
        code = _reason(body[0], name)
        if len(body) == 1:
            return cls(code)
        properties, i = decode_properties(body, 1, kind)
        if i != len(body):
            raise RemoteProtocolError(f"{name} has bytes after its properties")
        return cls(code, properties)

    decode.__name__ = f"_decode_{name.lower()}5"
    return decode


def _empty(packet: Packet, name: str) -> Callable[[int, memoryview], Packet]:
    def decode(flags: int, body: memoryview) -> Packet:
        if len(body):
            raise RemoteProtocolError(f"{name} remaining length {len(body)}, not 0")
        return packet

    return decode


def _connect_unreachable(flags: int, body: memoryview) -> Packet:  # pragma: no cover
    raise AssertionError("CONNECT is decoded by codec._decode_connect")


DECODERS: tuple[Callable[[int, memoryview], Packet] | None, ...] = (
    None,
    _connect_unreachable,  # replaced by codec with its version-dispatching decoder
    _decode_connack,
    decode_publish,
    _ack_decoder(PubAck, "PUBACK"),
    _ack_decoder(PubRec, "PUBREC"),
    _ack_decoder(PubRel, "PUBREL"),
    _ack_decoder(PubComp, "PUBCOMP"),
    _decode_subscribe,
    _decode_suback,
    _decode_unsubscribe,
    _decode_unsuback,
    _empty(PingReq(), "PINGREQ"),
    _empty(PingResp(), "PINGRESP"),
    _reason_and_properties(Disconnect, "DISCONNECT", DISCONNECT),
    _reason_and_properties(Auth, "AUTH", AUTH),
)
"""Body decoders of MQTT 5, indexed by packet type."""

__all__ = ["DECODERS", "NO_PROPERTIES", "PROTOCOL_ERROR", "decode_connect5", "decode_publish"]
