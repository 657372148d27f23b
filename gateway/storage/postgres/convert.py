"""Conversions between Python values and PostgreSQL columns (shared by writes and reads)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from uuid import UUID

import psycopg

from gateway.model.declarations import value_decl_from_json
from gateway.model.tree import DeviceNode, NetworkTree, StateKind, StateNode, ValueNode

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

KIND_CODE = {StateKind.REPORT: 1, StateKind.CONTROL: 2}
CODE_KIND = {v: k for k, v in KIND_CODE.items()}


def to_us(dt: datetime) -> int:
    """A UTC-aware datetime as integer microseconds since the epoch (exact)."""
    if dt.tzinfo is None:
        raise ValueError("naive datetime: fleetgate stores UTC-aware datetimes only")
    return (dt - EPOCH) // _US


def opt_us(dt: datetime | None) -> int | None:
    return None if dt is None else to_us(dt)


def from_us(us: int | None) -> datetime | None:
    return None if us is None else EPOCH + timedelta(microseconds=us)


def load_tree(conn: psycopg.Connection, network: UUID) -> NetworkTree | None:
    """The whole tree of one network (devices and values in declaration order)."""
    row = conn.execute("SELECT id FROM networks WHERE uuid = %s", (network,)).fetchone()
    if row is None:
        return None
    nid = row[0]
    states: dict[int, list[StateNode]] = {}
    for value_id, uuid, kind in conn.execute(
            "SELECT value_id, uuid, kind FROM states WHERE network_id = %s ORDER BY kind",
            (nid,)):
        states.setdefault(value_id, []).append(StateNode(uuid, CODE_KIND[kind]))
    values: dict[int, list[ValueNode]] = {}
    for vid, device_id, uuid, decl in conn.execute(
            "SELECT id, device_id, uuid, decl FROM value_nodes WHERE network_id = %s "
            "ORDER BY id", (nid,)):
        node = ValueNode(uuid, value_decl_from_json(json.loads(decl)),
                         tuple(states.get(vid, ())))
        values.setdefault(device_id, []).append(node)
    devices = tuple(
        DeviceNode(uuid, name, tuple(values.get(did, ())), description)
        for did, uuid, name, description in conn.execute(
            "SELECT id, uuid, name, description FROM devices WHERE network_id = %s ORDER BY id",
            (nid,)))
    return NetworkTree(network, devices)
