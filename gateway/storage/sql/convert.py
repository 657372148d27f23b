"""Conversions between Python values and the stores' columns, and the network tree both
sides read (shared by both engines, through their `Dialect`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from uuid import UUID

from gateway.model.declarations import value_decl_from_json
from gateway.model.tree import DeviceNode, NetworkTree, StateKind, StateNode, ValueNode

from .dialect import Dialect

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

KIND_CODE = {StateKind.REPORT: 1, StateKind.CONTROL: 2}
CODE_KIND = {v: k for k, v in KIND_CODE.items()}
REPORT, CONTROL = KIND_CODE[StateKind.REPORT], KIND_CODE[StateKind.CONTROL]


def to_us(dt: datetime) -> int:
    """A UTC-aware datetime as integer microseconds since the epoch (exact)."""
    if dt.tzinfo is None:
        raise ValueError("naive datetime: fleetgate stores UTC-aware datetimes only")
    return (dt - EPOCH) // _US


def opt_us(dt: datetime | None) -> int | None:
    return None if dt is None else to_us(dt)


def from_us(us: int | None) -> datetime | None:
    return None if us is None else EPOCH + timedelta(microseconds=us)


def load_tree(db: Dialect, network: UUID) -> NetworkTree | None:
    """The whole tree of one network (devices and values in declaration order)."""
    row = db.execute("SELECT id FROM networks WHERE uuid = ?", (db.uuid_in(network),)
                     ).fetchone()
    if row is None:
        return None
    nid = row[0]
    uuid_out = db.uuid_out
    states: dict[int, list[StateNode]] = {}
    for value_id, uuid, kind in db.execute(
            "SELECT value_id, uuid, kind FROM states WHERE network_id = ? ORDER BY kind",
            (nid,)):
        states.setdefault(value_id, []).append(StateNode(uuid_out(uuid), CODE_KIND[kind]))
    values: dict[int, list[ValueNode]] = {}
    for vid, device_id, uuid, decl in db.execute(
            "SELECT id, device_id, uuid, decl FROM value_nodes WHERE network_id = ? "
            "ORDER BY id", (nid,)):
        node = ValueNode(uuid_out(uuid), value_decl_from_json(json.loads(decl)),
                         tuple(states.get(vid, ())))
        values.setdefault(device_id, []).append(node)
    devices = tuple(
        DeviceNode(uuid_out(uuid), name, tuple(values.get(did, ())), description)
        for did, uuid, name, description in db.execute(
            "SELECT id, uuid, name, description FROM devices WHERE network_id = ? ORDER BY id",
            (nid,)))
    return NetworkTree(network, devices)
