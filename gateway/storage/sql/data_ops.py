"""Writer operations on the data model, readings, commands, connections and erasure, written
once for both engines.

Each operation is a frozen value with `apply(side)`, run by the single writer in its worker
thread, many per one transaction (the engine's `WriteSide.apply_batch` says how, and how one
failing operation is kept from failing the others). `Reports` alone is not applied: the
engine's write side takes its rows (`rows_for`) and writes a batch's readings together
(SQLite: executemany; PostgreSQL: binary COPY).
"""

from __future__ import annotations

import json
import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from gateway.model.declarations import ModelDecl
from gateway.model.errors import DeclarationRejected
from gateway.model.limits import Limits
from gateway.model.tree import NetworkTree, ReportRow, StateKind

from ..audit import AuditRecord
from ..records import StateRecord
from . import audit_ops
from .convert import CONTROL, REPORT, load_tree, to_us
from .dialect import Dialect
from .write_side import ROW_OVERHEAD, WriteSideBase


@dataclass(frozen=True, slots=True)
class Reports:
    rows: Sequence[ReportRow]

    def rows_for(self, side: WriteSideBase) -> list[tuple[int, int, int, str]]:
        """(state id, ts_us, received_us, data) per row. Raises UnknownValue."""
        # The hot loop of the writer thread (which shares the GIL with the event loop): rows
        # of one publish or socket read share their datetime objects, so convert each once.
        out = []
        last_dt, last_us = None, 0
        states = side.report_states
        for r in self.rows:
            sid = states.get(r.value)
            if sid is None:
                sid = side.state_id(r.value, REPORT)
            received = r.received
            if received is not last_dt:
                last_dt, last_us = received, to_us(received)
            rec_us = last_us
            ts = r.timestamp
            if ts is not last_dt:
                last_dt, last_us = ts, to_us(ts)
            out.append((sid, last_us, rec_us, r.data))
        return out


def _declare_node(db: Dialect, table: str, parent: tuple[str, int],
                  more: tuple[tuple[str, Any], ...], name: str, field: str, value: Any,
                  now: int) -> int:
    """The id of node `name` under `parent` (column, id) in `table` (devices, value_nodes):
    created with a new uuid4 and the `more` columns if it is missing, its `field` set to
    `value` (and `updated_us` to `now`) if that differs. A node keeps its uuid forever."""
    column, parent_id = parent
    row = db.execute(f"SELECT id, {field} FROM {table} WHERE {column} = ? AND name = ?",
                     (parent_id, name)).fetchone()
    if row is None:
        columns = (("uuid", db.uuid_in(uuidlib.uuid4())), parent, *more, ("name", name),
                   (field, value), ("created_us", now), ("updated_us", now))
        (node_id,) = db.execute(
            f"INSERT INTO {table} ({', '.join(c for c, _ in columns)}) "
            f"VALUES ({', '.join('?' for _ in columns)}) RETURNING id",
            tuple(v for _, v in columns)).fetchone()
        return node_id
    if row[1] != value:
        db.execute(f"UPDATE {table} SET {field} = ?, updated_us = ? WHERE id = ?",
                   (value, now, row[0]))
    return row[0]


@dataclass(frozen=True, slots=True)
class Declare:
    network: UUID
    model: ModelDecl
    now: datetime
    limits: Limits

    def apply(self, side: WriteSideBase) -> NetworkTree:
        """Create or update the declared nodes; the network's whole tree.

        Raises DeclarationRejected (nothing written) when the network would pass its caps."""
        db, now = side.db, to_us(self.now)
        nid = side.network_id(self.network, now)
        side.lock_network(nid)
        self._check_caps(db, nid)
        for dev in self.model.devices:
            did = _declare_node(db, "devices", ("network_id", nid), (), dev.name,
                                "description", dev.description, now)
            for v in dev.values:
                vid = _declare_node(db, "value_nodes", ("device_id", did), (("network_id", nid),),
                                    v.name, "decl", json.dumps(v.to_json(), sort_keys=True), now)
                # States are created when the permission first needs them and never deleted:
                # a value that goes from rw to r keeps its Control history.
                kinds = ([REPORT] if v.permission.reportable else []) + (
                    [CONTROL] if v.permission.controllable else [])
                for kind in kinds:
                    db.execute("INSERT INTO states (uuid, value_id, network_id, kind) "
                               "VALUES (?, ?, ?, ?) ON CONFLICT (value_id, kind) DO NOTHING",
                               (db.uuid_in(uuidlib.uuid4()), vid, nid, kind))
        side.report_states.clear()  # a value may have gained or lost reportability
        tree = load_tree(db, self.network)
        assert tree is not None
        return tree

    def _check_caps(self, db: Dialect, nid: int) -> None:
        existing_devices = {name for (name,) in db.execute(
            "SELECT name FROM devices WHERE network_id = ?", (nid,))}
        new_devices = {d.name for d in self.model.devices} - existing_devices
        if len(existing_devices) + len(new_devices) > self.limits.max_devices_per_network:
            raise DeclarationRejected([
                f"the network would have {len(existing_devices) + len(new_devices)} devices; "
                f"the limit is {self.limits.max_devices_per_network}"])
        existing_values = {(d, v) for d, v in db.execute(
            "SELECT d.name, v.name FROM value_nodes v JOIN devices d ON d.id = v.device_id "
            "WHERE v.network_id = ?", (nid,))}
        declared = {(d.name, v.name) for d in self.model.devices for v in d.values}
        total = len(existing_values | declared)
        if total > self.limits.max_values_per_network:
            raise DeclarationRejected([
                f"the network would have {total} values; the limit is "
                f"{self.limits.max_values_per_network}"])


@dataclass(frozen=True, slots=True)
class Control:
    value: UUID
    data: str
    now: datetime

    def apply(self, side: WriteSideBase) -> StateRecord:
        """Store a command (a Control state). Raises UnknownValue."""
        sid = side.state_id(self.value, CONTROL)
        now = to_us(self.now)
        side.prepare_reading(sid, now)
        (rid,) = side.db.execute(
            "INSERT INTO state_log (state_id, ts_us, received_us, data) VALUES (?, ?, ?, ?) "
            "RETURNING id", (sid, now, now, self.data)).fetchone()
        side.add_usage({side.state_networks[sid]: len(self.data.encode()) + ROW_OVERHEAD})
        return StateRecord(rid, self.value, StateKind.CONTROL, self.data, self.now, self.now)


def _log_connection(db: Dialect, nid: int, event: str, now: int, client_id: str | None, *,
                    cert_serial: str | None = None, reason: str | None = None) -> None:
    """Append one event ('connect' or 'disconnect') to the network's connection log."""
    db.execute("INSERT INTO connection_log (network_id, event, at_us, client_id, cert_serial, "
               "reason) VALUES (?, ?, ?, ?, ?, ?)",
               (nid, event, now, client_id, cert_serial, reason))


@dataclass(frozen=True, slots=True)
class MarkConnected:
    network: UUID
    client_id: str
    cert_serial: str | None
    now: datetime

    def apply(self, side: WriteSideBase) -> None:
        now = to_us(self.now)
        nid = side.network_id(self.network, now)
        side.db.execute(
            "INSERT INTO connection_status AS c (network_id, connections, connected_since_us, "
            "last_seen_us, cert_serial, client_id, disconnect_reason) "
            "VALUES (?, 1, ?, ?, ?, ?, NULL) ON CONFLICT (network_id) DO UPDATE SET "
            "connections = c.connections + 1, "
            "connected_since_us = CASE WHEN c.connections = 0 "
            "THEN excluded.connected_since_us ELSE c.connected_since_us END, "
            "last_seen_us = excluded.last_seen_us, cert_serial = excluded.cert_serial, "
            "client_id = excluded.client_id, disconnect_reason = NULL",
            (nid, now, now, self.cert_serial, self.client_id))
        _log_connection(side.db, nid, "connect", now, self.client_id,
                        cert_serial=self.cert_serial)


@dataclass(frozen=True, slots=True)
class MarkDisconnected:
    network: UUID
    client_id: str
    reason: str
    now: datetime

    def apply(self, side: WriteSideBase) -> None:
        now = to_us(self.now)
        nid = side.network_id(self.network, now, create=False)
        if nid is None:
            return  # erased while connected (HTTP API): must not come back as a new row
        side.db.execute(
            "UPDATE connection_status SET "
            "connections = CASE WHEN connections > 1 THEN connections - 1 ELSE 0 END, "
            "connected_since_us = CASE WHEN connections <= 1 THEN NULL "
            "ELSE connected_since_us END, last_seen_us = ?, disconnect_reason = ? "
            "WHERE network_id = ?", (now, self.reason, nid))
        _log_connection(side.db, nid, "disconnect", now, self.client_id, reason=self.reason)


@dataclass(frozen=True, slots=True)
class Seen:
    network: UUID
    now: datetime

    def apply(self, side: WriteSideBase) -> None:
        nid = side.network_id(self.network, to_us(self.now), create=False)
        if nid is not None:
            side.db.execute("UPDATE connection_status SET last_seen_us = ? "
                            "WHERE network_id = ?", (to_us(self.now), nid))


@dataclass(frozen=True, slots=True)
class ResetConnections:
    """At start-up: no connection survived the previous process."""

    reason: str
    now: datetime

    def apply(self, side: WriteSideBase) -> int:
        """Mark every network offline; the number that were online."""
        db, now = side.db, to_us(self.now)
        stale = db.execute(
            "SELECT network_id FROM connection_status WHERE connections > 0").fetchall()
        for (nid,) in stale:
            _log_connection(db, nid, "disconnect", now, None, reason=self.reason)
        db.execute(
            "UPDATE connection_status SET connections = 0, connected_since_us = NULL, "
            "disconnect_reason = ? WHERE connections > 0", (self.reason,))
        return len(stale)


ERASE_ORDER = (
    # children before parents (foreign keys)
    ("state_log", "state_id IN (SELECT id FROM states WHERE network_id = ?)"),
    ("states", "network_id = ?"),
    ("value_nodes", "network_id = ?"),
    ("devices", "network_id = ?"),
    ("connection_status", "network_id = ?"),
    ("connection_log", "network_id = ?"),
    ("retained", "network_id = ?"),
    ("queued_refs", "network_id = ?"),
    ("queued_messages", "network_id = ?"),
    ("subscriptions", "network_id = ?"),
    ("sessions", "network_id = ?"),
    ("network_usage", "network_id = ?"),
    ("networks", "id = ?"),
)


@dataclass(frozen=True, slots=True)
class Erase:
    network: UUID
    audit: AuditRecord | None = None  # the erasure's entry, committed with it

    def apply(self, side: WriteSideBase) -> bool:
        """Delete every row of the network (and append `audit`); False if it was unknown.

        The engines make the deletes final their own way (`network_erased`): SQLite's
        writer runs with secure_delete and truncates the WAL after the batch; PostgreSQL's
        waits first for every batch holding the network's states (`lock_network_states`)."""
        nid = side.network_id(self.network, 0, create=False)
        if nid is None:
            return False
        side.lock_network_states(nid)
        for table, where in ERASE_ORDER:
            side.db.execute(f"DELETE FROM {table} WHERE {where}", (nid,))
        if self.audit is not None:
            audit_ops.append(side.db, self.audit)
        side.network_erased()
        return True


def report_count(op: Any) -> int:
    """The readings an operation writes (the writer's `rows` statistic)."""
    return len(op.rows) if isinstance(op, Reports) else 0


__all__ = ["Control", "Declare", "Erase", "MarkConnected", "MarkDisconnected", "Reports",
           "ResetConnections", "Seen", "report_count"]
