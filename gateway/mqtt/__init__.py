"""A sans-IO MQTT 3.1.1 server core: bytes in, events out; events in, bytes out.

This package imports no trio, ssl, socket or database module, and never reads a clock:
time is passed in. A test proves it.
"""

from ._state import ConnectionState
from .codec import PacketReader, decode, encode, encode_into
from .errors import LocalProtocolError, MQTTError, PacketTooLarge, RemoteProtocolError
from .events import (
    ConnectReceived,
    DeliveryComplete,
    Disconnected,
    Event,
    PublishReceived,
    SubscribeReceived,
    UnsubscribeReceived,
)
from .packets import (
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
from .session import ConnectionStatistics, ProtocolSessionState, ServerConnection
from .topics import SubscriptionTree, topic_matches, validate_topic_filter, validate_topic_name

__all__ = [
    "SUBACK_FAILURE",
    "ConnAck",
    "Connect",
    "ConnectReceived",
    "ConnectionState",
    "ConnectionStatistics",
    "ConnectReturnCode",
    "DeliveryComplete",
    "Disconnect",
    "Disconnected",
    "Event",
    "LocalProtocolError",
    "MQTTError",
    "Packet",
    "PacketTooLarge",
    "PacketReader",
    "PacketType",
    "PingReq",
    "PingResp",
    "PubAck",
    "PubComp",
    "PubRec",
    "PubRel",
    "Publish",
    "PublishReceived",
    "QoS",
    "RemoteProtocolError",
    "ServerConnection",
    "ProtocolSessionState",
    "SubAck",
    "Subscribe",
    "SubscribeReceived",
    "SubscriptionTree",
    "UnsubAck",
    "Unsubscribe",
    "UnsubscribeReceived",
    "Will",
    "decode",
    "encode",
    "encode_into",
    "topic_matches",
    "validate_topic_filter",
    "validate_topic_name",
]
