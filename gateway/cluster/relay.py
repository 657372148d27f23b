"""The relay's wire form: one routed message as a bus body (JSON, payload in base64).

Sans-IO: `encode_relay(message, kept, now)` -> str and `decode_relay(body)` -> `Relayed`.
`kept` carries the origin's retained outcome for a retained message (set, or cleared:
refused over a cap, or an empty payload), so every node's mirror ends where the origin's did.
MQTT 5 properties travel as the store keeps them (`gateway.delivery.props_to_wire`: a
PUBLISH property list, the response topic device-relative), with the expiry time.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from ..broker_state import Message
from ..delivery import props_from_wire, props_to_wire
from ..jail import Jail
from ..mqtt.packets import QoS

__all__ = ["Relayed", "decode_relay", "encode_relay"]


@dataclass(frozen=True, slots=True)
class Relayed:
    message: Message
    kept: Message | None
    sent_at: float
    """The origin's wall clock when it relayed (for the lag figure)."""


def encode_relay(message: Message, kept: Message | None, now: float) -> str:
    doc = {"t": message.topic, "q": int(message.qos), "p": base64.b64encode(
        message.payload).decode("ascii"), "w": round(now, 6)}
    if message.retain:
        doc["r"] = 1 if kept is not None else 0
    if message.props is not None:
        doc["x"] = base64.b64encode(props_to_wire(message.props, Jail(message.network))
                                    ).decode("ascii")
    if message.expires_at is not None:
        doc["e"] = message.expires_at
    return json.dumps(doc, separators=(",", ":"))


def decode_relay(body: str) -> Relayed:
    """Raises ValueError (or KeyError, TypeError) for a body no node wrote."""
    doc = json.loads(body)
    topic = str(doc["t"])
    props = None
    if "x" in doc:
        props = props_from_wire(base64.b64decode(doc["x"], validate=True),
                                Jail(topic.partition("/")[0]))
    expires = float(doc["e"]) if "e" in doc else None
    message = Message(topic, base64.b64decode(doc["p"], validate=True), QoS(int(doc["q"])),
                      "r" in doc, props=props, expires_at=expires)
    kept = None
    if doc.get("r") == 1:
        kept = Message(topic, message.payload, message.qos, True, props=props,
                       expires_at=expires)
    return Relayed(message, kept, float(doc["w"]))
