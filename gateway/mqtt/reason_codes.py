"""MQTT 5.0 reason codes, one IntEnum per packet kind (OASIS MQTT 5.0, section 2.4).

Named `...Code` to stay apart from `gateway.reasons`, the gateway's own close reasons (a
layer above: one of those may be sent as one of these).

MQTT 5 has one table of reason codes whose meaning depends on the packet carrying it; each
packet accepts a subset. One enum per packet kind keeps that subset checkable: a value is
valid in a packet exactly when it is a member of that packet's enum. Codes below 0x80 mean
success, 0x80 and above failure (section 2.4).

`connack_reason` and `connect_return_code` translate a refusal between the two protocol
versions, so the application can refuse with either enum and the session sends what the
client's version understands.
"""

from __future__ import annotations

from enum import IntEnum

from .packets import ConnectReturnCode


class ConnAckCode(IntEnum):
    """CONNACK reason codes (section 3.2.2.2)."""

    SUCCESS = 0x00
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    BAD_AUTHENTICATION_METHOD = 0x8C
    TOPIC_NAME_INVALID = 0x90
    PACKET_TOO_LARGE = 0x95
    QUOTA_EXCEEDED = 0x97
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    CONNECTION_RATE_EXCEEDED = 0x9F


class PubAckCode(IntEnum):
    """PUBACK and PUBREC reason codes (sections 3.4.2.1 and 3.5.2.1)."""

    SUCCESS = 0x00
    NO_MATCHING_SUBSCRIBERS = 0x10
    UNSPECIFIED_ERROR = 0x80
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    NOT_AUTHORIZED = 0x87
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    QUOTA_EXCEEDED = 0x97
    PAYLOAD_FORMAT_INVALID = 0x99


class PubRelCode(IntEnum):
    """PUBREL and PUBCOMP reason codes (sections 3.6.2.1 and 3.7.2.1)."""

    SUCCESS = 0x00
    PACKET_IDENTIFIER_NOT_FOUND = 0x92


class SubAckCode(IntEnum):
    """SUBACK reason codes (section 3.9.3): a granted QoS, or a refusal."""

    GRANTED_QOS_0 = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    UNSPECIFIED_ERROR = 0x80
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    NOT_AUTHORIZED = 0x87
    TOPIC_FILTER_INVALID = 0x8F
    PACKET_IDENTIFIER_IN_USE = 0x91
    QUOTA_EXCEEDED = 0x97
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


class UnsubAckCode(IntEnum):
    """UNSUBACK reason codes (section 3.11.3)."""

    SUCCESS = 0x00
    NO_SUBSCRIPTION_EXISTED = 0x11
    UNSPECIFIED_ERROR = 0x80
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    NOT_AUTHORIZED = 0x87
    TOPIC_FILTER_INVALID = 0x8F
    PACKET_IDENTIFIER_IN_USE = 0x91


class DisconnectCode(IntEnum):
    """DISCONNECT reason codes (section 3.14.2.1); who may send each is in the comments."""

    NORMAL_DISCONNECTION = 0x00
    DISCONNECT_WITH_WILL_MESSAGE = 0x04  # client only
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    NOT_AUTHORIZED = 0x87  # server only, and the rest below unless marked
    SERVER_BUSY = 0x89
    SERVER_SHUTTING_DOWN = 0x8B
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90  # both
    RECEIVE_MAXIMUM_EXCEEDED = 0x93  # both
    TOPIC_ALIAS_INVALID = 0x94  # both
    PACKET_TOO_LARGE = 0x95  # both
    MESSAGE_RATE_TOO_HIGH = 0x96  # both
    QUOTA_EXCEEDED = 0x97  # both
    ADMINISTRATIVE_ACTION = 0x98  # both
    PAYLOAD_FORMAT_INVALID = 0x99  # both
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


SERVER_SENDS_NEVER = frozenset({DisconnectCode.DISCONNECT_WITH_WILL_MESSAGE})
"""DISCONNECT reasons only a client may send (table 3-10)."""

CLIENT_SENDS = frozenset(
    {
        DisconnectCode.NORMAL_DISCONNECTION,
        DisconnectCode.DISCONNECT_WITH_WILL_MESSAGE,
        DisconnectCode.UNSPECIFIED_ERROR,
        DisconnectCode.MALFORMED_PACKET,
        DisconnectCode.PROTOCOL_ERROR,
        DisconnectCode.IMPLEMENTATION_SPECIFIC_ERROR,
        DisconnectCode.TOPIC_NAME_INVALID,
        DisconnectCode.RECEIVE_MAXIMUM_EXCEEDED,
        DisconnectCode.TOPIC_ALIAS_INVALID,
        DisconnectCode.PACKET_TOO_LARGE,
        DisconnectCode.MESSAGE_RATE_TOO_HIGH,
        DisconnectCode.QUOTA_EXCEEDED,
        DisconnectCode.ADMINISTRATIVE_ACTION,
        DisconnectCode.PAYLOAD_FORMAT_INVALID,
    }
)
"""DISCONNECT reasons a client may send (table 3-10); others from a client are malformed."""


class AuthCode(IntEnum):
    """AUTH reason codes (section 3.15.2.1)."""

    SUCCESS = 0x00
    CONTINUE_AUTHENTICATION = 0x18
    RE_AUTHENTICATE = 0x19


def _values(enum: type[IntEnum]) -> frozenset[int]:
    return frozenset(int(member) for member in enum)


ALLOWED_CODES: dict[str, frozenset[int]] = {
    "CONNACK": _values(ConnAckCode),
    "PUBACK": _values(PubAckCode),
    "PUBREC": _values(PubAckCode),
    "PUBREL": _values(PubRelCode),
    "PUBCOMP": _values(PubRelCode),
    "SUBACK": _values(SubAckCode),
    "UNSUBACK": _values(UnsubAckCode),
    "DISCONNECT": _values(DisconnectCode),
    "AUTH": _values(AuthCode),
}
"""Packet name -> the reason codes it may carry (its enum's values, as plain ints for a
fast membership test), for the MQTT 5 encoder and decoder alike."""

_TO_V5 = {
    ConnectReturnCode.ACCEPTED: ConnAckCode.SUCCESS,
    ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION: ConnAckCode.UNSUPPORTED_PROTOCOL_VERSION,
    ConnectReturnCode.IDENTIFIER_REJECTED: ConnAckCode.CLIENT_IDENTIFIER_NOT_VALID,
    ConnectReturnCode.SERVER_UNAVAILABLE: ConnAckCode.SERVER_UNAVAILABLE,
    ConnectReturnCode.BAD_USERNAME_OR_PASSWORD: ConnAckCode.BAD_USER_NAME_OR_PASSWORD,
    ConnectReturnCode.NOT_AUTHORIZED: ConnAckCode.NOT_AUTHORIZED,
}
_TO_V4 = {
    ConnAckCode.SUCCESS: ConnectReturnCode.ACCEPTED,
    ConnAckCode.UNSUPPORTED_PROTOCOL_VERSION: ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION,
    ConnAckCode.CLIENT_IDENTIFIER_NOT_VALID: ConnectReturnCode.IDENTIFIER_REJECTED,
    ConnAckCode.BAD_USER_NAME_OR_PASSWORD: ConnectReturnCode.BAD_USERNAME_OR_PASSWORD,
    ConnAckCode.BAD_AUTHENTICATION_METHOD: ConnectReturnCode.BAD_USERNAME_OR_PASSWORD,
    ConnAckCode.NOT_AUTHORIZED: ConnectReturnCode.NOT_AUTHORIZED,
    ConnAckCode.BANNED: ConnectReturnCode.NOT_AUTHORIZED,
}


def connack_reason(code: ConnectReturnCode | ConnAckCode | int) -> ConnAckCode:
    """The MQTT 5 CONNACK reason for a 3.1.1 return code (or a 5 reason, unchanged).

    Raises `ValueError` for a number that is neither.
    """
    if isinstance(code, ConnAckCode):
        return code
    if isinstance(code, ConnectReturnCode) or 0 <= code <= 5:
        return _TO_V5[ConnectReturnCode(code)]
    return ConnAckCode(code)


def connect_return_code(code: ConnectReturnCode | ConnAckCode | int) -> ConnectReturnCode:
    """The 3.1.1 CONNACK return code for a 5 reason (or a 3.1.1 code, unchanged).

    5 reasons without a 3.1.1 counterpart (busy, quota exceeded, use another server, ...)
    become 0x03 server unavailable, the 3.1.1 code for "try again later or elsewhere".
    """
    if isinstance(code, ConnectReturnCode) or (
        not isinstance(code, ConnAckCode) and 0 <= code <= 5
    ):
        return ConnectReturnCode(code)
    return _TO_V4.get(ConnAckCode(code), ConnectReturnCode.SERVER_UNAVAILABLE)


__all__ = [
    "ALLOWED_CODES",
    "CLIENT_SENDS",
    "SERVER_SENDS_NEVER",
    "AuthCode",
    "ConnAckCode",
    "DisconnectCode",
    "PubAckCode",
    "PubRelCode",
    "SubAckCode",
    "UnsubAckCode",
    "connack_reason",
    "connect_return_code",
]
