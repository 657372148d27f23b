"""JSON shapes of the stored records (one place, so endpoints and export agree).

Values are stored as the text the device sent (or the API set); the API answers them typed
by their value's declaration: a number as a JSON number, a string or XML document as a JSON
string, a blob as `{"base64": "<text as sent>"}` so a client never mistakes it for a string.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from gateway.model.declarations import BlobType, NumberType, ValueType
from gateway.model.tree import NetworkTree, ValueNode
from gateway.storage.records import (
    ConnectionEvent,
    ConnectionStatus,
    RetainedMessage,
    StateRecord,
    StoredSession,
)


def ts(dt: datetime | None) -> str | None:
    """RFC 3339 in UTC with microseconds, as the device protocol writes it."""
    if dt is None:
        return None
    return dt.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def typed(value_type: ValueType, data: str) -> Any:
    """`data` (stored text) as its declared type says a JSON client should see it."""
    if isinstance(value_type, NumberType):
        try:
            number = float(data)
        except ValueError:  # stored before a re-declaration changed the type: as it is
            return data
        if number.is_integer() and not any(c in data for c in ".eE"):
            return int(number)
        return number
    if isinstance(value_type, BlobType):
        return {"base64": data}
    return data


def state_json(r: StateRecord, value_type: ValueType) -> dict[str, Any]:
    return {"type": str(r.kind), "data": typed(value_type, r.data),
            "timestamp": ts(r.timestamp), "received": ts(r.received)}


def status_json(s: ConnectionStatus, expiry: dict[str, datetime] | None = None
                ) -> dict[str, Any]:
    """A network's connection status; `expiry` maps certificate serials to not_after."""
    return {
        "uuid": str(s.network),
        "status": "online" if s.online else "offline",
        "connections": s.connections,
        "connected_since": ts(s.connected_since),
        "last_seen": ts(s.last_seen),
        "cert_serial": s.cert_serial,
        "cert_not_after": ts((expiry or {}).get(s.cert_serial or "")),
        "client_id": s.client_id,
        "disconnect_reason": s.disconnect_reason,
    }


def value_json(value: ValueNode, latest: dict[Any, StateRecord]) -> dict[str, Any]:
    """A value with, on each of its states, the latest entry (or null)."""
    doc = value.to_json()
    for state_doc, node in zip(doc["states"], value.states, strict=True):
        record = latest.get(node.uuid)
        state_doc["latest"] = None if record is None else {
            "data": typed(value.decl.type, record.data), "timestamp": ts(record.timestamp),
            "received": ts(record.received)}
    return doc


def tree_json(tree: NetworkTree, latest: dict[Any, StateRecord]) -> dict[str, Any]:
    doc: dict[str, Any] = {"uuid": str(tree.uuid), "devices": []}
    for device in tree.devices:
        ddoc = device.to_json()
        ddoc["values"] = [value_json(v, latest) for v in device.values]
        doc["devices"].append(ddoc)
    return doc


def event_json(e: ConnectionEvent) -> dict[str, Any]:
    return {"event": e.event, "at": ts(e.at), "client_id": e.client_id,
            "cert_serial": e.cert_serial, "reason": e.reason}


def retained_json(m: RetainedMessage) -> dict[str, Any]:
    return {"topic": m.topic, "qos": m.qos,
            "payload_base64": base64.b64encode(m.payload).decode()}


def session_json(s: StoredSession) -> dict[str, Any]:
    return {"client_id": s.client_id,
            "subscriptions": [{"filter": f, "qos": q} for f, q in s.subscriptions],
            "queued": [{"topic": m.topic, "qos": m.qos, "retain": m.retain,
                        "payload_base64": base64.b64encode(m.payload).decode()}
                       for m in s.queued]}
