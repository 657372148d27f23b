"""The relay's wire form: one routed message as a bus body (JSON, payload in base64).

Sans-IO: `encode_relay(message, kept, now)` -> str and `decode_relay(body)` -> `Relayed`.
`kept` carries the origin's retained outcome for a retained message (set, or cleared:
refused over a cap, or an empty payload), so every node's mirror ends where the origin's did.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from ..broker import Message
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
    return json.dumps(doc, separators=(",", ":"))


def decode_relay(body: str) -> Relayed:
    """Raises ValueError (or KeyError, TypeError) for a body no node wrote."""
    doc = json.loads(body)
    message = Message(str(doc["t"]), base64.b64decode(doc["p"], validate=True),
                      QoS(int(doc["q"])), "r" in doc)
    kept = None
    if doc.get("r") == 1:
        kept = Message(message.topic, message.payload, message.qos, True)
    return Relayed(message, kept, float(doc["w"]))
