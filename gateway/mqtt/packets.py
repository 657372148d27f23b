"""MQTT 3.1.1 control packets as frozen values (OASIS MQTT 3.1.1, chapter 3).

Every packet the server can receive or send is one frozen, slotted dataclass. They carry no
wire details beyond what the standard makes visible (flags the sender chooses, packet
identifiers); encoding and decoding live in `codec`. The protocol level is data
(`Connect.protocol_level`), so MQTT 5 can be added as more data, not as a fork.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


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


@dataclass(frozen=True, slots=True)
class Will:
    """The will message carried in CONNECT (section 3.1.2.5)."""

    topic: str
    payload: bytes
    qos: QoS = QoS.AT_MOST_ONCE
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Connect:
    client_id: str
    clean_session: bool = True
    keepalive: int = 0
    will: Will | None = None
    username: str | None = None
    password: bytes | None = None
    protocol_name: str = "MQTT"
    protocol_level: int = PROTOCOL_LEVEL_3_1_1


@dataclass(frozen=True, slots=True)
class ConnAck:
    return_code: ConnectReturnCode = ConnectReturnCode.ACCEPTED
    session_present: bool = False


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: QoS = QoS.AT_MOST_ONCE
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None  # present exactly when qos > 0 (section 2.3.1)


@dataclass(frozen=True, slots=True)
class PubAck:
    packet_id: int


@dataclass(frozen=True, slots=True)
class PubRec:
    packet_id: int


@dataclass(frozen=True, slots=True)
class PubRel:
    packet_id: int


@dataclass(frozen=True, slots=True)
class PubComp:
    packet_id: int


@dataclass(frozen=True, slots=True)
class Subscribe:
    packet_id: int
    subscriptions: tuple[tuple[str, QoS], ...]  # (topic filter, requested QoS), at least one


@dataclass(frozen=True, slots=True)
class SubAck:
    packet_id: int
    return_codes: tuple[int, ...]  # granted QoS per filter, or SUBACK_FAILURE


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_id: int
    topic_filters: tuple[str, ...]  # at least one


@dataclass(frozen=True, slots=True)
class UnsubAck:
    packet_id: int


@dataclass(frozen=True, slots=True)
class PingReq:
    pass


@dataclass(frozen=True, slots=True)
class PingResp:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    pass


Packet = (
    Connect | ConnAck | Publish | PubAck | PubRec | PubRel | PubComp | Subscribe | SubAck
    | Unsubscribe | UnsubAck | PingReq | PingResp | Disconnect
)
