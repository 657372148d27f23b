"""MQTT 3.1.1 packet bodies to values, and the fixed-header rules of both versions
(OASIS MQTT 3.1.1, chapters 2 and 3; MQTT 5 bodies are in `decoder5`).

Each decoder takes the fixed header's flags and a memoryview of exactly the packet's body,
and returns a packet value or raises `RemoteProtocolError` naming the rule broken.
`FIRST_BYTE_ERRORS` (and `_5`) tell, per first byte, whether its type and flags are legal.
`_decode_connect` reads the protocol level and hands a level-5 CONNECT to `decoder5`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from . import decoder5
from .errors import RemoteProtocolError
from .packets import (
    PROTOCOL_LEVEL_3_1_1,
    PROTOCOL_LEVEL_5,
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
    Will,
)
from .topics import has_control_character, validate_topic_filter, validate_topic_name
from .wire import decode_binary, decode_u8, decode_u16, decode_utf8

_T = TypeVar("_T")
_QOS = (QoS.AT_MOST_ONCE, QoS.AT_LEAST_ONCE, QoS.EXACTLY_ONCE)

_RETURN_CODES = tuple(ConnectReturnCode)
_VALID_SUBACK_CODES = frozenset((0, 1, 2, SUBACK_FAILURE))
_PINGREQ = PingReq()
_PINGRESP = PingResp()
_DISCONNECT = Disconnect()

# Fixed-header flags every type but PUBLISH must carry (section 2.2.2, table 2.2), and the
# normative statement that names the check where the standard has a specific one.
_REQUIRED_FLAGS = {
    PacketType.CONNECT: 0,
    PacketType.CONNACK: 0,
    PacketType.PUBACK: 0,
    PacketType.PUBREC: 0,
    PacketType.PUBREL: 0b0010,
    PacketType.PUBCOMP: 0,
    PacketType.SUBSCRIBE: 0b0010,
    PacketType.SUBACK: 0,
    PacketType.UNSUBSCRIBE: 0b0010,
    PacketType.UNSUBACK: 0,
    PacketType.PINGREQ: 0,
    PacketType.PINGRESP: 0,
    PacketType.DISCONNECT: 0,
}
_FLAG_RULES = {
    PacketType.PUBREL: "MQTT-3.6.1-1",
    PacketType.SUBSCRIBE: "MQTT-3.8.1-1",
    PacketType.UNSUBSCRIBE: "MQTT-3.10.1-1",
    PacketType.DISCONNECT: "MQTT-3.14.1-1",
}
# Indexed by the whole first byte: None where type and flags are legal (or PUBLISH, whose
# flags carry meaning and are checked when decoding), else the error to raise.
FIRST_BYTE_ERRORS: list[tuple[str, str | None] | None] = []
for _byte in range(256):
    _type, _flags = _byte >> 4, _byte & 0x0F
    if _type in (0, 15):
        FIRST_BYTE_ERRORS.append((f"reserved control packet type {_type} (section 2.2.1)", None))
    elif _type == PacketType.PUBLISH or _flags == _REQUIRED_FLAGS[PacketType(_type)]:
        FIRST_BYTE_ERRORS.append(None)
    else:
        FIRST_BYTE_ERRORS.append(
            (
                f"{PacketType(_type).name} with fixed-header flags {_flags:04b}, "
                f"not {_REQUIRED_FLAGS[PacketType(_type)]:04b} (section 2.2.2)",
                _FLAG_RULES.get(PacketType(_type), "MQTT-2.2.2-2"),
            )
        )
del _byte, _type, _flags
# MQTT 5: the same, but type 15 is AUTH (flags 0, section 3.15.1).
FIRST_BYTE_ERRORS_5 = list(FIRST_BYTE_ERRORS)
for _byte in range(0xF0, 0x100):
    FIRST_BYTE_ERRORS_5[_byte] = None if _byte == 0xF0 else (
        f"AUTH with fixed-header flags {_byte & 0x0F:04b}, not 0000 (section 3.15.1)", None)
del _byte




def _packet_id(body: memoryview, offset: int, what: str) -> tuple[int, int]:
    packet_id, offset = decode_u16(body, offset)
    if packet_id == 0:
        raise RemoteProtocolError(f"{what} with packet identifier 0", rule="MQTT-2.3.1-1")
    return packet_id, offset


def _expect_end(body: memoryview, offset: int, what: str) -> None:
    if offset != len(body):
        raise RemoteProtocolError(
            f"{what}: remaining length {len(body)} but its fields end at byte {offset}"
        )


def _field(
    decoder: Callable[[memoryview, int], tuple[_T, int]], body: memoryview, i: int, rule: str
) -> tuple[_T, int]:
    """Decode a CONNECT payload field whose absence breaks `rule` (truncation has no rule
    of its own; ill-formed UTF-8 keeps its MQTT-1.5.3 rule)."""
    try:
        return decoder(body, i)
    except RemoteProtocolError as exc:
        if exc.rule is None:
            exc.rule = rule
        raise


def _decode_connect(flags: int, body: memoryview) -> Connect:
    # Section 3.1.2: protocol name, level, connect flags, keep alive; 3.1.3: the payload.
    protocol_name, i = decode_utf8(body, 0)
    if protocol_name != "MQTT":
        raise RemoteProtocolError(
            f"CONNECT protocol name {protocol_name!r} is not 'MQTT'", rule="MQTT-3.1.2-1"
        )
    level, i = decode_u8(body, i)
    if level != PROTOCOL_LEVEL_3_1_1 and level != PROTOCOL_LEVEL_5:
        raise RemoteProtocolError(
            f"unsupported protocol level {level}",
            rule="MQTT-3.1.2-2",
            connack_code=ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION,
        )
    if level == PROTOCOL_LEVEL_3_1_1:
        return _decode_connect_flags(body, i, False)
    try:
        return _decode_connect_flags(body, i, True)
    except RemoteProtocolError as exc:
        # MQTT 5: a CONNECT's malformed packet / protocol error is answered with a
        # CONNACK carrying that reason code (section 3.2.2.2).
        if exc.connack_code is None:
            exc.connack_code = exc.reason_code
        raise


def _decode_connect_flags(body: memoryview, i: int, v5: bool) -> Connect:
    cflags, i = decode_u8(body, i)
    if cflags & 0x01:
        raise RemoteProtocolError("CONNECT reserved flag is set", rule="MQTT-3.1.2-3")
    will_flag = cflags & 0x04
    will_qos = (cflags >> 3) & 0x03
    will_retain = bool(cflags & 0x20)
    if will_flag:
        if will_qos == 3:
            raise RemoteProtocolError("CONNECT will QoS is 3", rule="MQTT-3.1.2-14")
    else:
        if will_qos:
            raise RemoteProtocolError("will QoS set without the will flag", rule="MQTT-3.1.2-13")
        if will_retain:
            raise RemoteProtocolError("will retain set without the will flag", rule="MQTT-3.1.2-15")
    if v5:
        # MQTT 5 allows a password without a user name (3.1.2.9).
        keepalive, i = decode_u16(body, i)
        return decoder5.decode_connect5(body, i, cflags, keepalive)
    if cflags & 0x40 and not cflags & 0x80:
        raise RemoteProtocolError("password flag set without username flag", rule="MQTT-3.1.2-22")
    keepalive, i = decode_u16(body, i)
    client_id, i = _field(decode_utf8, body, i, "MQTT-3.1.3-3")
    if has_control_character(client_id):
        raise RemoteProtocolError(
            "client identifier contains a control character", rule="MQTT-3.1.3-9",
            connack_code=ConnectReturnCode.IDENTIFIER_REJECTED,
        )
    will = None
    if will_flag:
        will_topic, i = _field(decode_utf8, body, i, "MQTT-3.1.2-9")
        validate_topic_name(will_topic)
        will_payload, i = _field(decode_binary, body, i, "MQTT-3.1.2-9")
        will = Will(will_topic, will_payload, _QOS[will_qos], will_retain)
    username = password = None
    if cflags & 0x80:
        username, i = _field(decode_utf8, body, i, "MQTT-3.1.2-19")
        decoder5.check_identifier(username, "user name")
    if cflags & 0x40:
        password, i = _field(decode_binary, body, i, "MQTT-3.1.2-21")
    if i != len(body):
        # Trailing bytes sit where the first field after the last one present would be: that
        # field's flag said it is absent (MQTT-3.1.2-11, -18, -20).
        if password is not None:
            rule = None
        elif username is not None:
            rule = "MQTT-3.1.2-20"
        elif will is not None:
            rule = "MQTT-3.1.2-18"
        else:
            rule = "MQTT-3.1.2-11"
        raise RemoteProtocolError(
            f"CONNECT has {len(body) - i} bytes after its last flagged field", rule=rule
        )
    return Connect(
        client_id=client_id,
        clean_session=bool(cflags & 0x02),
        keepalive=keepalive,
        will=will,
        username=username,
        password=password,
    )


def _decode_connack(flags: int, body: memoryview) -> ConnAck:
    # Section 3.2.2: acknowledge flags (bits 7-1 reserved) and a return code.
    if len(body) != 2:
        raise RemoteProtocolError(f"CONNACK remaining length {len(body)}, not 2")
    ack_flags, code = body[0], body[1]
    if ack_flags & 0xFE:
        raise RemoteProtocolError("CONNACK reserved acknowledge flags are set (3.2.2.1)")
    if code >= len(_RETURN_CODES):
        raise RemoteProtocolError(f"CONNACK reserved return code {code} (3.2.2.3)")
    if ack_flags and code:
        raise RemoteProtocolError(
            "CONNACK refuses the connection yet says a session is present", rule="MQTT-3.2.2-4"
        )
    return ConnAck(_RETURN_CODES[code], bool(ack_flags))


def _decode_publish(flags: int, body: memoryview) -> Publish:
    # Section 3.3: DUP, QoS and RETAIN in the fixed header; topic name; packet id if QoS > 0.
    qos, dup = decoder5.publish_flags(flags)
    topic, i = decode_utf8(body, 0)
    validate_topic_name(topic)
    packet_id = None
    if qos:
        packet_id, i = _packet_id(body, i, "PUBLISH")
    return Publish(topic, bytes(body[i:]), _QOS[qos], bool(flags & 0x01), dup, packet_id)


def _ack_decoder(cls: type, name: str) -> Callable[[int, memoryview], Packet]:
    def decode(flags: int, body: memoryview) -> Packet:
        if len(body) != 2:
            raise RemoteProtocolError(f"{name} remaining length {len(body)}, not 2")
        packet_id = (body[0] << 8) | body[1]
        if packet_id == 0:
            raise RemoteProtocolError(f"{name} with packet identifier 0", rule="MQTT-2.3.1-1")
        return cls(packet_id)

    decode.__name__ = f"_decode_{name.lower()}"
    return decode


def _decode_subscribe(flags: int, body: memoryview) -> Subscribe:
    # Section 3.8: packet id, then (topic filter, requested QoS) pairs to the end.
    packet_id, i = _packet_id(body, 0, "SUBSCRIBE")
    subscriptions = []
    end = len(body)
    while i < end:
        topic_filter, i = decode_utf8(body, i)
        validate_topic_filter(topic_filter)
        requested, i = decode_u8(body, i)
        if requested > 2:
            raise RemoteProtocolError(
                f"SUBSCRIBE requested QoS byte {requested:#04x}: reserved bits or QoS 3",
                rule="MQTT-3.8.3-4",
            )
        subscriptions.append((topic_filter, _QOS[requested]))
    if not subscriptions:
        raise RemoteProtocolError("SUBSCRIBE without a topic filter", rule="MQTT-3.8.3-3")
    return Subscribe(packet_id, tuple(subscriptions))


def _decode_suback(flags: int, body: memoryview) -> SubAck:
    # Section 3.9: packet id, then one return code per filter subscribed.
    packet_id, i = _packet_id(body, 0, "SUBACK")
    codes = tuple(body[i:])
    if not codes:
        raise RemoteProtocolError("SUBACK without a return code (3.9.3)")
    for code in codes:
        if code not in _VALID_SUBACK_CODES:
            raise RemoteProtocolError(f"SUBACK reserved return code {code}", rule="MQTT-3.9.3-2")
    return SubAck(packet_id, codes)


def _decode_unsubscribe(flags: int, body: memoryview) -> Unsubscribe:
    # Section 3.10: packet id, then topic filters to the end.
    packet_id, i = _packet_id(body, 0, "UNSUBSCRIBE")
    filters = []
    end = len(body)
    while i < end:
        topic_filter, i = decode_utf8(body, i)
        validate_topic_filter(topic_filter)
        filters.append(topic_filter)
    if not filters:
        raise RemoteProtocolError("UNSUBSCRIBE without a topic filter", rule="MQTT-3.10.3-2")
    return Unsubscribe(packet_id, tuple(filters))


def _empty_decoder(packet: Packet, name: str) -> Callable[[int, memoryview], Packet]:
    def decode(flags: int, body: memoryview) -> Packet:
        if len(body):
            raise RemoteProtocolError(f"{name} remaining length {len(body)}, not 0")
        return packet

    decode.__name__ = f"_decode_{name.lower()}"
    return decode


DECODERS: tuple[Callable[[int, memoryview], Packet] | None, ...] = (
    None,
    _decode_connect,
    _decode_connack,
    _decode_publish,
    _ack_decoder(PubAck, "PUBACK"),
    _ack_decoder(PubRec, "PUBREC"),
    _ack_decoder(PubRel, "PUBREL"),
    _ack_decoder(PubComp, "PUBCOMP"),
    _decode_subscribe,
    _decode_suback,
    _decode_unsubscribe,
    _ack_decoder(UnsubAck, "UNSUBACK"),
    _empty_decoder(_PINGREQ, "PINGREQ"),
    _empty_decoder(_PINGRESP, "PINGRESP"),
    _empty_decoder(_DISCONNECT, "DISCONNECT"),
    None,
)
DECODERS_5 = (None, _decode_connect, *decoder5.DECODERS[2:])

