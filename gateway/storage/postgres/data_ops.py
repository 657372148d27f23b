"""Writer operations on the data model, readings, commands, connections and erasure.

The same operations as the SQLite store's (gateway/storage/sqlite/ops.py), in PostgreSQL's
SQL: `RETURNING id` for new rows, `ON CONFLICT` for the upserts. Run by `WriteSide` (ops.py)
in the writer's thread, many per transaction.
"""

from __future__ import annotations

import json
import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg

from gateway.model.declarations import ModelDecl
from gateway.model.errors import DeclarationRejected
from gateway.model.limits import Limits
from gateway.model.tree import NetworkTree, ReportRow, StateKind

from ..audit import AuditRecord
from ..records import StateRecord
from . import audit_ops
from .convert import load_tree, to_us
from .ops import CONTROL, REPORT, ROW_OVERHEAD, WriteSide


@dataclass(frozen=True, slots=True)
class Reports:
    rows: Sequence[ReportRow]

    def rows_for(self, side: WriteSide) -> list[tuple[int, int, int, str]]:
        # The writer thread's hot loop: rows of one socket read share their datetimes.
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


@dataclass(frozen=True, slots=True)
class Declare:
    network: UUID
    model: ModelDecl
    now: datetime
    limits: Limits

    def apply(self, side: WriteSide) -> NetworkTree:
        conn, now = side.conn, to_us(self.now)
        nid = side.network_id(self.network, now)
        # Two nodes declaring the same network at once would each see the other's new rows
        # only after commit: one declaration per network at a time.
        conn.execute("SELECT id FROM networks WHERE id = %s FOR UPDATE", (nid,))
        self._check_caps(conn, nid)
        for dev in self.model.devices:
            row = conn.execute("SELECT id, description FROM devices WHERE network_id = %s "
                               "AND name = %s", (nid, dev.name)).fetchone()
            if row is None:
                (did,) = conn.execute(
                    "INSERT INTO devices (uuid, network_id, name, description, created_us, "
                    "updated_us) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                    (uuidlib.uuid4(), nid, dev.name, dev.description, now, now)).fetchone()
            else:
                did = row[0]
                if row[1] != dev.description:
                    conn.execute("UPDATE devices SET description = %s, updated_us = %s "
                                 "WHERE id = %s", (dev.description, now, did))
            for v in dev.values:
                decl = json.dumps(v.to_json(), sort_keys=True)
                row = conn.execute("SELECT id, decl FROM value_nodes WHERE device_id = %s "
                                   "AND name = %s", (did, v.name)).fetchone()
                if row is None:
                    (vid,) = conn.execute(
                        "INSERT INTO value_nodes (uuid, device_id, network_id, name, decl, "
                        "created_us, updated_us) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                        "RETURNING id",
                        (uuidlib.uuid4(), did, nid, v.name, decl, now, now)).fetchone()
                else:
                    vid = row[0]
                    if row[1] != decl:
                        conn.execute("UPDATE value_nodes SET decl = %s, updated_us = %s "
                                     "WHERE id = %s", (decl, now, vid))
                # States are created when the permission first needs them and never deleted:
                # a value that goes from rw to r keeps its Control history.
                kinds = ([REPORT] if v.permission.reportable else []) + (
                    [CONTROL] if v.permission.controllable else [])
                for kind in kinds:
                    conn.execute("INSERT INTO states (uuid, value_id, network_id, kind) "
                                 "VALUES (%s, %s, %s, %s) ON CONFLICT (value_id, kind) "
                                 "DO NOTHING", (uuidlib.uuid4(), vid, nid, kind))
        side.report_states.clear()  # a value may have gained or lost reportability
        tree = load_tree(conn, self.network)
        assert tree is not None
        return tree

    def _check_caps(self, conn: psycopg.Connection, nid: int) -> None:
        existing_devices = {name for (name,) in conn.execute(
            "SELECT name FROM devices WHERE network_id = %s", (nid,))}
        new_devices = {d.name for d in self.model.devices} - existing_devices
        if len(existing_devices) + len(new_devices) > self.limits.max_devices_per_network:
            raise DeclarationRejected([
                f"the network would have {len(existing_devices) + len(new_devices)} devices; "
                f"the limit is {self.limits.max_devices_per_network}"])
        existing_values = {(d, v) for d, v in conn.execute(
            "SELECT d.name, v.name FROM value_nodes v JOIN devices d ON d.id = v.device_id "
            "WHERE v.network_id = %s", (nid,))}
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

    def apply(self, side: WriteSide) -> StateRecord:
        sid = side.state_id(self.value, CONTROL)
        now = to_us(self.now)
        side.lock_states({sid})
        side.ensure_partitions([now])
        (rid,) = side.conn.execute(
            "INSERT INTO state_log (state_id, ts_us, received_us, data) "
            "VALUES (%s, %s, %s, %s) RETURNING id", (sid, now, now, self.data)).fetchone()
        side.add_usage({side.state_networks[sid]: len(self.data.encode()) + ROW_OVERHEAD})
        return StateRecord(rid, self.value, StateKind.CONTROL, self.data, self.now, self.now)


@dataclass(frozen=True, slots=True)
class MarkConnected:
    network: UUID
    client_id: str
    cert_serial: str | None
    now: datetime

    def apply(self, side: WriteSide) -> None:
        now = to_us(self.now)
        nid = side.network_id(self.network, now)
        side.conn.execute(
            "INSERT INTO connection_status AS c (network_id, connections, connected_since_us, "
            "last_seen_us, cert_serial, client_id, disconnect_reason) "
            "VALUES (%s, 1, %s, %s, %s, %s, NULL) ON CONFLICT (network_id) DO UPDATE SET "
            "connections = c.connections + 1, "
            "connected_since_us = CASE WHEN c.connections = 0 "
            "THEN excluded.connected_since_us ELSE c.connected_since_us END, "
            "last_seen_us = excluded.last_seen_us, cert_serial = excluded.cert_serial, "
            "client_id = excluded.client_id, disconnect_reason = NULL",
            (nid, now, now, self.cert_serial, self.client_id))
        side.conn.execute(
            "INSERT INTO connection_log (network_id, event, at_us, client_id, cert_serial) "
            "VALUES (%s, 'connect', %s, %s, %s)", (nid, now, self.client_id, self.cert_serial))


@dataclass(frozen=True, slots=True)
class MarkDisconnected:
    network: UUID
    client_id: str
    reason: str
    now: datetime

    def apply(self, side: WriteSide) -> None:
        now = to_us(self.now)
        nid = side.network_id(self.network, now, create=False)
        if nid is None:
            return  # erased while connected (HTTP API): must not come back as a new row
        side.conn.execute(
            "UPDATE connection_status SET connections = greatest(connections - 1, 0), "
            "connected_since_us = CASE WHEN connections <= 1 THEN NULL "
            "ELSE connected_since_us END, last_seen_us = %s, disconnect_reason = %s "
            "WHERE network_id = %s", (now, self.reason, nid))
        side.conn.execute(
            "INSERT INTO connection_log (network_id, event, at_us, client_id, reason) "
            "VALUES (%s, 'disconnect', %s, %s, %s)", (nid, now, self.client_id, self.reason))


@dataclass(frozen=True, slots=True)
class Seen:
    network: UUID
    now: datetime

    def apply(self, side: WriteSide) -> None:
        nid = side.network_id(self.network, to_us(self.now), create=False)
        if nid is not None:
            side.conn.execute("UPDATE connection_status SET last_seen_us = %s "
                              "WHERE network_id = %s", (to_us(self.now), nid))


@dataclass(frozen=True, slots=True)
class ResetConnections:
    """At start-up: no connection survived the previous process."""

    reason: str
    now: datetime

    def apply(self, side: WriteSide) -> int:
        now = to_us(self.now)
        stale = side.conn.execute(
            "SELECT network_id FROM connection_status WHERE connections > 0").fetchall()
        for (nid,) in stale:
            side.conn.execute(
                "INSERT INTO connection_log (network_id, event, at_us, reason) "
                "VALUES (%s, 'disconnect', %s, %s)", (nid, now, self.reason))
        side.conn.execute(
            "UPDATE connection_status SET connections = 0, connected_since_us = NULL, "
            "disconnect_reason = %s WHERE connections > 0", (self.reason,))
        return len(stale)


ERASE_ORDER = (
    # children before parents (foreign keys)
    ("state_log", "state_id IN (SELECT id FROM states WHERE network_id = %s)"),
    ("states", "network_id = %s"),
    ("value_nodes", "network_id = %s"),
    ("devices", "network_id = %s"),
    ("connection_status", "network_id = %s"),
    ("connection_log", "network_id = %s"),
    ("retained", "network_id = %s"),
    ("queued_refs", "network_id = %s"),
    ("queued_messages", "network_id = %s"),
    ("subscriptions", "network_id = %s"),
    ("sessions", "network_id = %s"),
    ("network_usage", "network_id = %s"),
    ("networks", "id = %s"),
)


@dataclass(frozen=True, slots=True)
class Erase:
    network: UUID
    audit: AuditRecord | None = None  # the erasure's entry, committed with it

    def apply(self, side: WriteSide) -> bool:
        nid = side.network_id(self.network, 0, create=False)
        if nid is None:
            return False
        # Wait for every other writer's batch holding these states (ops.lock_states): the
        # deletes below then see their readings. (READ COMMITTED: each statement reads
        # what is committed when it starts.)
        side.conn.execute("SELECT id FROM states WHERE network_id = %s ORDER BY id "
                          "FOR UPDATE", (nid,))
        for table, where in ERASE_ORDER:
            side.conn.execute(f"DELETE FROM {table} WHERE {where}", (nid,))
        if self.audit is not None:
            audit_ops.append(side.conn, self.audit)
        side.reset_caches()
        return True


def report_count(op: Any) -> int:
    return len(op.rows) if isinstance(op, Reports) else 0


__all__ = ["Control", "Declare", "Erase", "MarkConnected", "MarkDisconnected", "Reports",
           "ResetConnections", "Seen", "report_count"]
