"""MQTT 5.0 properties: one frozen value, its codec and its per-packet rules (section 2.2.2).

Theory of operation. A property list is a Variable Byte Integer length followed by that
many bytes of (identifier, value) pairs (2.2.2.1). Each identifier has one data type and a
set of packets it may appear in (table 2-4, `SPEC`). `decode_properties` reads one list,
checking:
- an identifier that is unknown, or not allowed in this packet, or a value running past
  the list: a Malformed Packet (0x81, section 2.2.2.2);
- a property present twice, other than User Property (any packet) and Subscription
  Identifier (PUBLISH only): a Protocol Error (0x82);
- values the standard bars: Receive Maximum 0, Maximum Packet Size 0,
  Topic Alias 0, Subscription Identifier 0, a byte-valued flag other than 0 or 1, Maximum
  QoS other than 0 or 1, a wildcard in a Response Topic (MQTT-3.3.2-14): Protocol Errors
  (0x82).
`encode_properties` writes one list and refuses (`LocalProtocolError`) what the decoder
would refuse, so a conforming peer accepts what we send.

`Properties` is a frozen dataclass without slots, on purpose: every property is optional,
absent ones read their class-level default, and a decoded value stores only the properties
present (its `__dict__` is filled in one update, bypassing the frozen `__setattr__`). That
keeps a typical PUBLISH's property list (topic alias, message expiry, one user property)
to a few hundred nanoseconds. `NO_PROPERTIES` is shared by every packet without one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import IntEnum

from .errors import LocalProtocolError, RemoteProtocolError, protocol_error
from .wire import (
    check_utf8_bytes,
    encode_binary,
    encode_utf8,
    encode_varint,
)


class PropertyId(IntEnum):
    """Property identifiers (section 2.2.2.2, table 2-4)."""

    PAYLOAD_FORMAT_INDICATOR = 0x01
    MESSAGE_EXPIRY_INTERVAL = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_IDENTIFIER = 0x0B
    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_IDENTIFIER = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTHENTICATION_METHOD = 0x15
    AUTHENTICATION_DATA = 0x16
    REQUEST_PROBLEM_INFORMATION = 0x17
    WILL_DELAY_INTERVAL = 0x18
    REQUEST_RESPONSE_INFORMATION = 0x19
    RESPONSE_INFORMATION = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


@dataclass(frozen=True, init=False, repr=False)
class Properties:
    """Every MQTT 5 property, each None (absent) unless set; see section 3.x.2.2 of each
    packet for its meaning. Not slotted on purpose (module docstring).

    Built with keyword arguments named after the fields; only the present ones (not None,
    not empty) are stored, so `__dict__` holds exactly the properties present.
    """

    payload_format_indicator: int | None = None  # 0 unspecified bytes, 1 UTF-8
    message_expiry_interval: int | None = None  # seconds
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_identifiers: tuple[int, ...] = ()  # SUBSCRIBE: at most one
    session_expiry_interval: int | None = None  # seconds; 0xFFFFFFFF never expires
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: int | None = None
    will_delay_interval: int | None = None
    request_response_information: int | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: int | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    maximum_packet_size: int | None = None
    wildcard_subscription_available: int | None = None
    subscription_identifier_available: int | None = None
    shared_subscription_available: int | None = None

    def __init__(self, **values: object) -> None:
        present = self.__dict__
        for name, value in values.items():
            if name not in _FIELD_RANK:
                raise TypeError(f"Properties has no property {name!r}")
            if value is not None and value != ():
                if type(value) is list:
                    value = tuple(value)
                present[name] = value

    def __bool__(self) -> bool:
        """Whether any property is present."""
        return bool(self.__dict__)

    def __repr__(self) -> str:
        present = sorted(self.__dict__.items(), key=lambda item: _FIELD_RANK[item[0]])
        return f"Properties({', '.join(f'{name}={value!r}' for name, value in present)})"


_FIELD_NAMES = tuple(f.name for f in fields(Properties))
_FIELD_RANK = {name: rank for rank, name in enumerate(_FIELD_NAMES)}

NO_PROPERTIES = Properties()

# Data types (section 1.5).
BYTE, U16, U32, VARINT, UTF8, BINARY, PAIR = range(7)

_P = PropertyId
# Packet kinds a property may appear in; "WILL" is the will properties of CONNECT.
CONNECT, CONNACK, PUBLISH, WILL, PUBACK, PUBREC, PUBREL, PUBCOMP = (
    "CONNECT", "CONNACK", "PUBLISH", "WILL", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP")
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH = (
    "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "DISCONNECT", "AUTH")
_ACKS = (PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK)
_ALL = (CONNECT, CONNACK, PUBLISH, WILL, *_ACKS, SUBSCRIBE, UNSUBSCRIBE, DISCONNECT, AUTH)

SPEC: dict[int, tuple[str, int, tuple[str, ...]]] = {
    _P.PAYLOAD_FORMAT_INDICATOR: ("payload_format_indicator", BYTE, (PUBLISH, WILL)),
    _P.MESSAGE_EXPIRY_INTERVAL: ("message_expiry_interval", U32, (PUBLISH, WILL)),
    _P.CONTENT_TYPE: ("content_type", UTF8, (PUBLISH, WILL)),
    _P.RESPONSE_TOPIC: ("response_topic", UTF8, (PUBLISH, WILL)),
    _P.CORRELATION_DATA: ("correlation_data", BINARY, (PUBLISH, WILL)),
    _P.SUBSCRIPTION_IDENTIFIER: ("subscription_identifiers", VARINT, (PUBLISH, SUBSCRIBE)),
    _P.SESSION_EXPIRY_INTERVAL: ("session_expiry_interval", U32, (CONNECT, CONNACK, DISCONNECT)),
    _P.ASSIGNED_CLIENT_IDENTIFIER: ("assigned_client_identifier", UTF8, (CONNACK,)),
    _P.SERVER_KEEP_ALIVE: ("server_keep_alive", U16, (CONNACK,)),
    _P.AUTHENTICATION_METHOD: ("authentication_method", UTF8, (CONNECT, CONNACK, AUTH)),
    _P.AUTHENTICATION_DATA: ("authentication_data", BINARY, (CONNECT, CONNACK, AUTH)),
    _P.REQUEST_PROBLEM_INFORMATION: ("request_problem_information", BYTE, (CONNECT,)),
    _P.WILL_DELAY_INTERVAL: ("will_delay_interval", U32, (WILL,)),
    _P.REQUEST_RESPONSE_INFORMATION: ("request_response_information", BYTE, (CONNECT,)),
    _P.RESPONSE_INFORMATION: ("response_information", UTF8, (CONNACK,)),
    _P.SERVER_REFERENCE: ("server_reference", UTF8, (CONNACK, DISCONNECT)),
    _P.REASON_STRING: ("reason_string", UTF8, (CONNACK, *_ACKS, DISCONNECT, AUTH)),
    _P.RECEIVE_MAXIMUM: ("receive_maximum", U16, (CONNECT, CONNACK)),
    _P.TOPIC_ALIAS_MAXIMUM: ("topic_alias_maximum", U16, (CONNECT, CONNACK)),
    _P.TOPIC_ALIAS: ("topic_alias", U16, (PUBLISH,)),
    _P.MAXIMUM_QOS: ("maximum_qos", BYTE, (CONNACK,)),
    _P.RETAIN_AVAILABLE: ("retain_available", BYTE, (CONNACK,)),
    _P.USER_PROPERTY: ("user_properties", PAIR, _ALL),
    _P.MAXIMUM_PACKET_SIZE: ("maximum_packet_size", U32, (CONNECT, CONNACK)),
    _P.WILDCARD_SUBSCRIPTION_AVAILABLE: ("wildcard_subscription_available", BYTE, (CONNACK,)),
    _P.SUBSCRIPTION_IDENTIFIER_AVAILABLE: (
        "subscription_identifier_available", BYTE, (CONNACK,)),
    _P.SHARED_SUBSCRIPTION_AVAILABLE: ("shared_subscription_available", BYTE, (CONNACK,)),
}
"""Property id -> (Properties attribute, data type, packet kinds allowing it)."""

ALLOWED: dict[str, frozenset[int]] = {
    kind: frozenset(pid for pid, (_, _, kinds) in SPEC.items() if kind in kinds)
    for kind in _ALL
}
"""Packet kind -> the property identifiers it may carry."""

_BY_NAME = {name: (pid, kind) for pid, (name, kind, _) in SPEC.items()}
_REPEATABLE = {_P.USER_PROPERTY}
# Byte-valued properties that are flags (0 or 1), Maximum QoS too (0 or 1, section 3.2.2.3.4).
_FLAGS = frozenset({
    _P.PAYLOAD_FORMAT_INDICATOR, _P.REQUEST_PROBLEM_INFORMATION,
    _P.REQUEST_RESPONSE_INFORMATION, _P.MAXIMUM_QOS, _P.RETAIN_AVAILABLE,
    _P.WILDCARD_SUBSCRIPTION_AVAILABLE, _P.SUBSCRIPTION_IDENTIFIER_AVAILABLE,
    _P.SHARED_SUBSCRIPTION_AVAILABLE,
})
# Two/four-byte integers for which 0 is a Protocol Error.
_NON_ZERO = {
    _P.RECEIVE_MAXIMUM: "receive maximum 0 (3.1.2.11.3)",
    _P.MAXIMUM_PACKET_SIZE: "maximum packet size 0 (3.1.2.11.4)",
    _P.TOPIC_ALIAS: "topic alias 0 (3.3.2.3.4)",
    _P.SUBSCRIPTION_IDENTIFIER: "subscription identifier 0 (3.8.2.1.2)",
}


def _malformed(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message)


def decode_varint(buf: bytes | memoryview, offset: int) -> tuple[int, int]:
    """Decode a Variable Byte Integer (section 1.5.5) wholly inside `buf`.

    Raises `RemoteProtocolError` (malformed) when truncated or longer than 4 bytes.
    """
    value = 0
    shift = 0
    end = len(buf)
    for i in range(offset, offset + 4):
        if i >= end:
            raise _malformed("packet ends inside a variable byte integer")
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i + 1
        shift += 7
    raise _malformed("variable byte integer uses more than 4 bytes (1.5.5)")


def decode_properties(
    buf: bytes | memoryview, offset: int, kind: str
) -> tuple[Properties, int]:
    """Decode the property list of a `kind` packet starting at `buf[offset]`.

    `buf` ends where the packet ends. Returns `(properties, new_offset)`; raises
    `RemoteProtocolError` (reason_code 0x81 malformed, or 0x82 protocol error; module
    docstring) for anything the standard forbids.
    """
    if offset >= len(buf):
        raise _malformed(f"{kind} ends before its property length")
    length = buf[offset]
    if length == 0:
        return NO_PROPERTIES, offset + 1
    if length < 0x80:
        i = offset + 1
    else:
        length, i = decode_varint(buf, offset)
    end = i + length
    if end > len(buf):
        raise _malformed(f"{kind} property length {length} runs past the packet")
    allowed = ALLOWED[kind]
    found: dict[str, object] = {}
    pairs: list[tuple[str, str]] | None = None
    sub_ids: list[int] | None = None
    while i < end:
        pid = buf[i]
        i += 1
        spec = SPEC.get(pid)
        if spec is None or pid not in allowed:
            what = "unknown property" if spec is None else "property not allowed in"
            raise _malformed(f"{what} {pid:#04x} ({kind}, section 2.2.2.2)")
        name, dtype, _ = spec
        if dtype == BYTE:
            if i >= end:
                raise _malformed(f"{kind} property {pid:#04x} runs past its list")
            value: object = buf[i]
            i += 1
            if value > 1 and pid in _FLAGS:  # type: ignore[operator]
                raise protocol_error(f"{kind} property {name} is {value}, not 0 or 1")
        elif dtype == U16:
            if i + 2 > end:
                raise _malformed(f"{kind} property {pid:#04x} runs past its list")
            value = (buf[i] << 8) | buf[i + 1]
            i += 2
        elif dtype == U32:
            if i + 4 > end:
                raise _malformed(f"{kind} property {pid:#04x} runs past its list")
            value = int.from_bytes(buf[i : i + 4], "big")
            i += 4
        elif dtype == VARINT:
            value, i = decode_varint(buf[:end], i)
        elif dtype == PAIR:
            key, i = _string(buf, i, end, kind)
            val, i = _string(buf, i, end, kind)
            if pairs is None:
                pairs = []
            pairs.append((key, val))
            continue
        else:
            if i + 2 > end:
                raise _malformed(f"{kind} property {pid:#04x} runs past its list")
            stop = i + 2 + ((buf[i] << 8) | buf[i + 1])
            if stop > end:
                raise _malformed(f"{kind} property {pid:#04x} runs past its list")
            value = check_utf8_bytes(buf[i + 2 : stop]) if dtype == UTF8 else bytes(
                buf[i + 2 : stop])
            i = stop
        if value == 0 and pid in _NON_ZERO:
            raise protocol_error(f"{kind}: {_NON_ZERO[pid]} is a protocol error")
        if pid == _P.RESPONSE_TOPIC and ("+" in value or "#" in value):  # type: ignore[operator]
            raise protocol_error(f"{kind} response topic {value!r} has a wildcard",
                                 rule="MQTT-3.3.2-14")
        if pid == _P.SUBSCRIPTION_IDENTIFIER:
            if sub_ids is None:
                sub_ids = []
            elif kind != PUBLISH:
                raise protocol_error(f"{kind} carries the subscription identifier twice")
            sub_ids.append(value)  # type: ignore[arg-type]
            continue
        if name in found:
            raise protocol_error(f"{kind} carries property {name} twice (2.2.2.2)")
        found[name] = value
    if i != end:
        raise _malformed(f"{kind} property list overruns its length")
    if pairs is not None:
        found["user_properties"] = tuple(pairs)
    if sub_ids is not None:
        found["subscription_identifiers"] = tuple(sub_ids)
    props = _new(Properties)
    props.__dict__.update(found)
    return props, end


_new = object.__new__


def decode_publish_properties(buf: bytes, i: int, end: int) -> tuple[Properties, int] | None:
    """The hot path of `decode_properties(..., "PUBLISH")` for a `bytes` buffer whose
    packet ends at `end`, `i` at the property length: the properties a device commonly
    sends (message expiry, topic alias, payload format, user properties) parsed inline.

    Returns None whenever anything else or anything wrong appears: the caller then runs
    the general decoder, which gives the precise error. A differential test holds the two
    to the same answers.
    """
    length = buf[i]
    i += 1
    stop = i + length
    if length >= 0x80 or stop > end:
        return None
    props = _new(Properties)
    found = props.__dict__  # filled directly: absent properties read the class default
    pairs: list[tuple[str, str]] | None = None
    while i < stop:
        pid = buf[i]
        if pid == 0x23:  # topic alias
            i += 3
            if i > stop or "topic_alias" in found:
                return None
            value = (buf[i - 2] << 8) | buf[i - 1]
            if not value:
                return None
            found["topic_alias"] = value
        elif pid == 0x02:  # message expiry interval
            i += 5
            if i > stop or "message_expiry_interval" in found:
                return None
            found["message_expiry_interval"] = int.from_bytes(buf[i - 4 : i], "big")
        elif pid == 0x26:  # user property
            if i + 3 > stop:
                return None
            a = i + 3 + ((buf[i + 1] << 8) | buf[i + 2])
            if a + 2 > stop:
                return None
            b = a + 2 + ((buf[a] << 8) | buf[a + 1])
            if b > stop:
                return None
            try:
                pair = (buf[i + 3 : a].decode(), buf[a + 2 : b].decode())
            except UnicodeDecodeError:
                return None
            if "\x00" in pair[0] or "\x00" in pair[1]:
                return None
            if pairs is None:
                pairs = [pair]
            else:
                pairs.append(pair)
            i = b
        elif pid == 0x01:  # payload format indicator
            i += 2
            if i > stop or "payload_format_indicator" in found or buf[i - 1] > 1:
                return None
            found["payload_format_indicator"] = buf[i - 1]
        else:
            return None
    if i != stop:
        return None
    if pairs is not None:
        found["user_properties"] = tuple(pairs)
    return props, stop


def _string(buf: bytes | memoryview, i: int, end: int, kind: str) -> tuple[str, int]:
    if i + 2 > end:
        raise _malformed(f"{kind} user property runs past its list")
    stop = i + 2 + ((buf[i] << 8) | buf[i + 1])
    if stop > end:
        raise _malformed(f"{kind} user property runs past its list")
    return check_utf8_bytes(buf[i + 2 : stop]), stop


def without(props: Properties, name: str) -> Properties:
    """`props` without property `name` (cheaper than `dataclasses.replace`, and an empty
    result is `NO_PROPERTIES`)."""
    values = {k: v for k, v in props.__dict__.items() if k != name and v is not None
              and v != ()}
    if not values:
        return NO_PROPERTIES
    result = _new(Properties)
    result.__dict__.update(values)
    return result


def make_properties(**values: object) -> Properties:
    """`Properties(**values)`: None and empty values are absent; an unknown name raises
    TypeError."""
    return Properties(**values)


_WRITERS: dict[int, Callable[[object, bytearray], None]] = {}


def encode_properties(props: Properties, kind: str, out: bytearray) -> None:
    """Append the property list of a `kind` packet (length included) to `out`.

    Raises `LocalProtocolError` for a property not allowed in `kind`, a value out of its
    type's range, or one the decoder would refuse (module docstring).
    """
    present = props.__dict__
    if not present:
        out.append(0)
        return
    body = bytearray()
    allowed = ALLOWED[kind]
    names = sorted(present, key=_FIELD_RANK.__getitem__) if len(present) > 1 else present
    for name in names:
        value = present[name]
        pid, dtype = _BY_NAME[name]
        if pid not in allowed:
            raise LocalProtocolError(f"property {name} is not allowed in {kind}")
        if pid == _P.SUBSCRIPTION_IDENTIFIER:
            ids = value
            if kind == SUBSCRIBE and len(ids) > 1:  # type: ignore[arg-type]
                raise LocalProtocolError("SUBSCRIBE carries one subscription identifier")
            for sub_id in ids:  # type: ignore[attr-defined]
                if type(sub_id) is not int or not 1 <= sub_id <= 268_435_455:
                    raise LocalProtocolError(f"subscription identifier {sub_id!r} out of range")
                body.append(pid)
                encode_varint(sub_id, body)
            continue
        if pid == _P.USER_PROPERTY:
            for key, val in value:  # type: ignore[attr-defined]
                body.append(pid)
                encode_utf8(key, body)
                encode_utf8(val, body)
            continue
        body.append(pid)
        if dtype == BYTE:
            if type(value) not in (int, bool) or not 0 <= value <= (1 if pid in _FLAGS else 255):  # type: ignore[operator]
                raise LocalProtocolError(f"property {name} = {value!r} out of range")
            body.append(int(value))  # type: ignore[call-overload]
        elif dtype in (U16, U32):
            size = 2 if dtype == U16 else 4
            if type(value) is not int or not 0 <= value < 1 << (8 * size):
                raise LocalProtocolError(f"property {name} = {value!r} out of range")
            if value == 0 and pid in _NON_ZERO:
                raise LocalProtocolError(f"property {name} must not be 0")
            body += value.to_bytes(size, "big")
        elif dtype == UTF8:
            if pid == _P.RESPONSE_TOPIC and ("+" in value or "#" in value):  # type: ignore[operator]
                raise LocalProtocolError(f"response topic {value!r} has a wildcard (MQTT-3.3.2-14)")
            encode_utf8(value, body)  # type: ignore[arg-type]
        else:
            encode_binary(bytes(value), body)  # type: ignore[arg-type]
    encode_varint(len(body), out)
    out += body


__all__ = [
    "ALLOWED",
    "NO_PROPERTIES",
    "SPEC",
    "Properties",
    "PropertyId",
    "decode_properties",
    "decode_varint",
    "encode_properties",
    "make_properties",
    "without",
]
