"""A network's tree as the store keeps it: Network -> Device -> Value -> State, all with UUIDs.

These are values shared by the store (which builds them) and the ingest facade (which caches
them to validate readings without a store round trip). UUIDs are `uuid.UUID` (uuid4 for every
node; the network's is the device certificate's).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from .declarations import ValueDecl


class StateKind(StrEnum):
    """A value's two states: what the device reported, what an operator asked for."""

    REPORT = "Report"
    CONTROL = "Control"


@dataclass(frozen=True, slots=True)
class StateNode:
    uuid: UUID
    kind: StateKind


@dataclass(frozen=True, slots=True)
class ValueNode:
    uuid: UUID
    decl: ValueDecl
    states: tuple[StateNode, ...]

    @property
    def name(self) -> str:
        return self.decl.name

    def state(self, kind: StateKind) -> StateNode | None:
        for s in self.states:
            if s.kind is kind:
                return s
        return None

    def to_json(self) -> dict[str, Any]:
        out = {"uuid": str(self.uuid)}
        out.update(self.decl.to_json())
        out["states"] = [{"type": str(s.kind), "uuid": str(s.uuid)} for s in self.states]
        return out


@dataclass(frozen=True, slots=True)
class DeviceNode:
    uuid: UUID
    name: str
    values: tuple[ValueNode, ...]
    description: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"uuid": str(self.uuid), "name": self.name}
        if self.description is not None:
            out["description"] = self.description
        out["values"] = [v.to_json() for v in self.values]
        return out

    def uuids_json(self) -> dict[str, Any]:
        """This device's names and UUIDs, without the declarations (the device sent those):
        the `model/accepted/<device>` answer, bounded by the name and value-count limits."""
        return {"uuid": str(self.uuid), "name": self.name, "values": [
            {"uuid": str(v.uuid), "name": v.name,
             "states": [{"type": str(s.kind), "uuid": str(s.uuid)} for s in v.states]}
            for v in self.values]}


@dataclass(frozen=True, slots=True)
class NetworkTree:
    uuid: UUID
    devices: tuple[DeviceNode, ...]

    @property
    def value_count(self) -> int:
        return sum(len(d.values) for d in self.devices)

    def to_json(self) -> dict[str, Any]:
        return {"uuid": str(self.uuid), "devices": [d.to_json() for d in self.devices]}

    def summary_json(self) -> dict[str, Any]:
        """The network's and every device's UUID and how many values each has: the
        `model/accepted` answer (each device's value UUIDs go on `model/accepted/<device>`)."""
        return {"uuid": str(self.uuid), "devices": [
            {"uuid": str(d.uuid), "name": d.name, "values": len(d.values)}
            for d in self.devices]}


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One validated reading for a store to keep as a Report state of `value`."""

    value: UUID
    data: str
    timestamp: datetime  # the device's, or the receive time when it sent none
    received: datetime  # the gateway's receive time
