"""A sans-IO MQTT 3.1.1 server core: bytes in, events out; events in, bytes out.

This package imports no trio, ssl, socket or database module, and never reads a clock:
time is passed in. A test proves it.
"""

from .errors import LocalProtocolError, MQTTError, PacketTooLarge, RemoteProtocolError
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

__all__ = [
    "SUBACK_FAILURE",
    "ConnAck",
    "Connect",
    "ConnectReturnCode",
    "Disconnect",
    "LocalProtocolError",
    "MQTTError",
    "Packet",
    "PacketTooLarge",
    "PacketType",
    "PingReq",
    "PingResp",
    "PubAck",
    "PubComp",
    "PubRec",
    "PubRel",
    "Publish",
    "QoS",
    "RemoteProtocolError",
    "SubAck",
    "Subscribe",
    "UnsubAck",
    "Unsubscribe",
    "Will",
]
