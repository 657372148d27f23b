"""MQTT 3.1.1 and 5.0 control packets as frozen values (OASIS MQTT 3.1.1 and 5.0, chapter 3).

Every packet the server can receive or send is one frozen, slotted dataclass. They carry no
wire details beyond what the standard makes visible (flags the sender chooses, packet
identifiers); encoding and decoding live in `codec`. The protocol level is data
(`Connect.protocol_level`): MQTT 5 is more data, not a fork. What only MQTT 5 has (reason
codes on acknowledgements and DISCONNECT, properties, subscription options, AUTH) are
fields with defaults, so a 3.1.1 packet is built as before and a 3.1.1 encoder refuses a
packet whose 5-only fields are not at their defaults.

Reason codes are plain ints here (the enums of `reason_codes` are IntEnums, so members fit);
`Properties` lives in `properties` with its own codec and per-packet rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from .properties import NO_PROPERTIES, Properties


class PacketType(IntEnum):
    """Control packet types (section 2.2.1)."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15  # MQTT 5 only (section 3.15); reserved in 3.1.1


class QoS(IntEnum):
    """Quality of service levels (section 4.3)."""

    AT_MOST_ONCE = 0
    AT_LEAST_ONCE = 1
    EXACTLY_ONCE = 2


class ConnectReturnCode(IntEnum):
    """CONNACK return codes (section 3.2.2.3)."""

    ACCEPTED = 0x00
    UNACCEPTABLE_PROTOCOL_VERSION = 0x01
    IDENTIFIER_REJECTED = 0x02
    SERVER_UNAVAILABLE = 0x03
    BAD_USERNAME_OR_PASSWORD = 0x04
    NOT_AUTHORIZED = 0x05


SUBACK_FAILURE = 0x80
"""SUBACK return code for a refused subscription (section 3.9.3)."""

PROTOCOL_LEVEL_3_1_1 = 4
PROTOCOL_LEVEL_5 = 5


class RetainHandling(IntEnum):
    """When retained messages are sent on a new subscription (MQTT 5, section 3.8.3.1)."""

    SEND_ON_SUBSCRIBE = 0
    SEND_IF_NEW_SUBSCRIPTION = 1
    DO_NOT_SEND = 2


@dataclass(frozen=True, slots=True)
class SubscriptionOptions:
    """The MQTT 5 subscription options of one topic filter besides its QoS (3.8.3.1).

    Attributes:
        no_local: never send this client its own messages on this subscription.
        retain_as_published: forward the RETAIN flag as published, not cleared.
        retain_handling: see `RetainHandling`.
    """

    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: RetainHandling = RetainHandling.SEND_ON_SUBSCRIBE


DEFAULT_SUBSCRIPTION_OPTIONS = SubscriptionOptions()


@dataclass(frozen=True, slots=True)
class Will:
    """The will message carried in CONNECT (section 3.1.2.5)."""

    topic: str
    payload: bytes
    qos: QoS = QoS.AT_MOST_ONCE
    retain: bool = False
    properties: Properties = NO_PROPERTIES
    """MQTT 5 will properties: will delay interval, payload format indicator, message
    expiry interval, content type, response topic, correlation data, user properties."""


@dataclass(frozen=True, slots=True)
class Connect:
    """CONNECT (section 3.1). In MQTT 5 `clean_session` is the Clean Start flag."""

    client_id: str
    clean_session: bool = True
    keepalive: int = 0
    will: Will | None = None
    username: str | None = None
    password: bytes | None = None
    protocol_name: str = "MQTT"
    protocol_level: int = PROTOCOL_LEVEL_3_1_1
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class ConnAck:
    """CONNACK (section 3.2). `return_code` is a `ConnectReturnCode` in 3.1.1 and a
    `reason_codes.ConnAckCode` in MQTT 5 (both IntEnums; the codec checks the range)."""

    return_code: int = ConnectReturnCode.ACCEPTED
    session_present: bool = False
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: QoS = QoS.AT_MOST_ONCE
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None  # present exactly when qos > 0 (section 2.3.1)
    properties: Properties = NO_PROPERTIES
    """MQTT 5: payload format indicator, message expiry interval, topic alias, response
    topic, correlation data, user properties, subscription identifiers, content type. A
    PUBLISH using a topic alias alone (section 3.3.2.3.4) decodes with topic ""; the
    session resolves it before the application sees it."""


@dataclass(frozen=True, slots=True)
class PubAck:
    """PUBACK (3.4). MQTT 5: `reason_code` a `reason_codes.PubAckCode`; properties hold
    the reason string and user properties."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubRec:
    """PUBREC (3.5). MQTT 5: `reason_code` a `reason_codes.PubAckCode`."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubRel:
    """PUBREL (3.6). MQTT 5: `reason_code` a `reason_codes.PubRelCode`."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubComp:
    """PUBCOMP (3.7). MQTT 5: `reason_code` a `reason_codes.PubRelCode`."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Subscribe:
    """SUBSCRIBE (3.8): (topic filter, requested QoS) pairs, at least one.

    MQTT 5: `options` holds one `SubscriptionOptions` per pair, in order, or is empty
    when every filter has the default options (always so in 3.1.1); properties hold the
    subscription identifier (at most one) and user properties.
    """

    packet_id: int
    subscriptions: tuple[tuple[str, QoS], ...]
    options: tuple[SubscriptionOptions, ...] = ()
    properties: Properties = NO_PROPERTIES

    def options_of(self, index: int) -> SubscriptionOptions:
        """The options of the `index`-th filter (the defaults when `options` is empty)."""
        return self.options[index] if self.options else DEFAULT_SUBSCRIPTION_OPTIONS


@dataclass(frozen=True, slots=True)
class SubAck:
    """SUBACK (3.9): one code per filter. 3.1.1: granted QoS or SUBACK_FAILURE; MQTT 5:
    a `reason_codes.SubAckCode`."""

    packet_id: int
    return_codes: tuple[int, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """UNSUBSCRIBE (3.10): at least one topic filter; MQTT 5 user properties."""

    packet_id: int
    topic_filters: tuple[str, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class UnsubAck:
    """UNSUBACK (3.11). MQTT 5: one `reason_codes.UnsubAckCode` per filter (3.1.1: none)."""

    packet_id: int
    reason_codes: tuple[int, ...] = ()
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PingReq:
    pass


@dataclass(frozen=True, slots=True)
class PingResp:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    """DISCONNECT (3.14). MQTT 5: a `reason_codes.DisconnectCode` and properties (session
    expiry interval, reason string, server reference, user properties); 3.1.1: neither."""

    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Auth:
    """AUTH (MQTT 5 only, 3.15): a `reason_codes.AuthCode` and properties (authentication
    method and data, reason string, user properties)."""

    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


Packet = (
    Connect | ConnAck | Publish | PubAck | PubRec | PubRel | PubComp | Subscribe | SubAck
    | Unsubscribe | UnsubAck | PingReq | PingResp | Disconnect | Auth
)

PACKET_TYPE: dict[type, PacketType] = {
    Connect: PacketType.CONNECT,
    ConnAck: PacketType.CONNACK,
    Publish: PacketType.PUBLISH,
    PubAck: PacketType.PUBACK,
    PubRec: PacketType.PUBREC,
    PubRel: PacketType.PUBREL,
    PubComp: PacketType.PUBCOMP,
    Subscribe: PacketType.SUBSCRIBE,
    SubAck: PacketType.SUBACK,
    Unsubscribe: PacketType.UNSUBSCRIBE,
    UnsubAck: PacketType.UNSUBACK,
    PingReq: PacketType.PINGREQ,
    PingResp: PacketType.PINGRESP,
    Disconnect: PacketType.DISCONNECT,
    Auth: PacketType.AUTH,
}
"""Packet value class -> its type number (section 2.2.1), which `_state`'s tables are keyed by."""
