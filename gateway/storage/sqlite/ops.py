"""The write side: operations the single writer applies, many per transaction.

Each operation is a frozen value with `apply(side)`; `WriteSide.apply_batch` runs a batch in
one `BEGIN IMMEDIATE ... COMMIT` and returns one outcome per operation (its result, or
`Failed`). Report rows of consecutive `Reports` operations go to SQLite in one `executemany`.
An operation that finds bad input (an unknown value UUID) fails alone before touching SQL; if
SQL itself fails (or a value cannot be bound), the transaction is rolled back and the batch is
retried one operation per transaction, so one poisoned operation never costs the others.

Every row inserted into `state_log` adds its size (UTF-8 data bytes + `ROW_OVERHEAD`) to its
network's `network_usage` row in the same transaction (one upsert per network per flush);
erasure deletes the row with the rest. `WriteSide.usage` mirrors the values this writer last
wrote, for the stored-bytes quota (checked by ingest before it queues readings).

Runs only in the writer's worker thread; the caches are that thread's and are dropped on any
rollback, since they may hold ids the rollback undid. (The event loop reads `networks` and
`usage` with single dict lookups, which the GIL keeps whole.)
"""

from __future__ import annotations

import json
import sqlite3
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
from ..errors import StorageError
from ..records import (
    StateRecord,
)
from ..writer import Failed
from . import audit_ops
from .convert import KIND_CODE, from_us, load_tree, to_us

REPORT, CONTROL = KIND_CODE[StateKind.REPORT], KIND_CODE[StateKind.CONTROL]
ROW_OVERHEAD = 48  # bytes a stored reading costs besides its data: ids, times, index entry


class UnknownValue(StorageError):
    """A report or control names a value UUID this store does not hold (erased meanwhile?)."""


class WriteSide:
    """The write connection and its caches (uuid -> integer id)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.networks: dict[UUID, int] = {}
        self.report_states: dict[UUID, int] = {}
        self.state_networks: dict[int, int] = {}  # state id -> network id
        self.usage: dict[int, int] = {}  # network id -> stored bytes, as last written
        self.pending_rows: list[tuple[int, int, int, str]] = []
        self.pending_stamped: list[tuple[int, int, int, str, int, int, str]] = []
        self.pending_bytes: dict[int, int] = {}  # state id -> bytes of its pending rows
        self.pending_stamped_bytes: dict[int, int] = {}
        self.busy_retries = 0
        self.erased_in_batch = False

    def reset_caches(self) -> None:
        self.networks.clear()
        self.report_states.clear()
        self.state_networks.clear()
        self.usage.clear()

    def stored_bytes(self, network: UUID) -> int | None:
        """The network's stored bytes as this writer last wrote them; None if not known."""
        nid = self.networks.get(network)
        return None if nid is None else self.usage.get(nid)

    # -- lookups -----------------------------------------------------------------------
    def network_id(self, network: UUID, now_us: int, *, create: bool = True) -> int | None:
        nid = self.networks.get(network)
        if nid is not None:
            return nid
        row = self.conn.execute("SELECT id FROM networks WHERE uuid = ?",
                                (str(network),)).fetchone()
        if row is None:
            if not create:
                return None
            nid = self.conn.execute("INSERT INTO networks (uuid, created_us) VALUES (?, ?)",
                                    (str(network), now_us)).lastrowid
        else:
            nid = row[0]
        self.networks[network] = nid
        return nid

    def state_id(self, value: UUID, kind: int) -> int:
        if kind == REPORT:
            sid = self.report_states.get(value)
            if sid is not None:
                return sid
        row = self.conn.execute(
            "SELECT s.id, s.network_id, n.uuid FROM states s "
            "JOIN value_nodes v ON v.id = s.value_id JOIN networks n ON n.id = s.network_id "
            "WHERE v.uuid = ? AND s.kind = ?", (str(value), kind)).fetchone()
        if row is None:
            raise UnknownValue(f"no {'Report' if kind == REPORT else 'Control'} state for "
                               f"value {value}")
        sid, nid = row[0], row[1]
        self.state_networks[sid] = nid
        self.networks[UUID(row[2])] = nid
        if kind == REPORT:
            self.report_states[value] = sid
        return sid

    def add_usage(self, per_network: dict[int, int]) -> None:
        """Add bytes to networks' usage rows (in the current transaction)."""
        for nid, size in per_network.items():
            (self.usage[nid],) = self.conn.execute(
                "INSERT INTO network_usage (network_id, stored_bytes) VALUES (?, ?) "
                "ON CONFLICT (network_id) DO UPDATE SET "
                "stored_bytes = stored_bytes + excluded.stored_bytes RETURNING stored_bytes",
                (nid, size)).fetchone()

    # -- batches -----------------------------------------------------------------------
    def _by_network(self, per_state: dict[int, int], into: dict[int, int]) -> None:
        networks = self.state_networks
        for sid, size in per_state.items():
            nid = networks[sid]
            into[nid] = into.get(nid, 0) + size
        per_state.clear()

    def flush_rows(self) -> None:
        usage: dict[int, int] = {}
        if self.pending_rows:
            self.conn.executemany(
                "INSERT INTO state_log (state_id, ts_us, received_us, data) VALUES (?, ?, ?, ?)",
                self.pending_rows)
            self.pending_rows.clear()
            self._by_network(self.pending_bytes, usage)
        if self.pending_stamped:
            # A reading the device time-stamped is identified by (value, timestamp, data): a
            # QoS 1 resend (its PUBACK lost to a crash or a dropped connection) is stored
            # once. The lookup walks the (state, time) index the insert walks anyway.
            (last,) = self.conn.execute("SELECT coalesce(max(id), 0) FROM state_log").fetchone()
            before = self.conn.total_changes
            self.conn.executemany(
                "INSERT INTO state_log (state_id, ts_us, received_us, data) "
                "SELECT ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM state_log "
                "WHERE state_id = ? AND ts_us = ? AND data = ?)", self.pending_stamped)
            if self.conn.total_changes - before == len(self.pending_stamped):
                self._by_network(self.pending_stamped_bytes, usage)
            else:  # resends were skipped: count what went in (the rows just appended)
                self.pending_stamped_bytes.clear()
                for nid, size in self.conn.execute(
                        "SELECT s.network_id, sum(length(CAST(l.data AS BLOB)) + ?) "
                        "FROM state_log l JOIN states s ON s.id = l.state_id "
                        "WHERE l.id > ? GROUP BY s.network_id", (ROW_OVERHEAD, last)):
                    usage[nid] = usage.get(nid, 0) + size
            self.pending_stamped.clear()
        if usage:
            self.add_usage(usage)

    def _begin(self) -> None:
        while True:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                # Another process (a backup, the sqlite3 shell) holds the write lock past
                # busy_timeout: wait again rather than fail writes we were asked to keep.
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                self.busy_retries += 1

    def _apply(self, op: Any) -> Any:
        if isinstance(op, Reports):
            try:
                rows = op.rows_for(self)
            except StorageError as exc:
                return Failed(exc)
            plain, stamped = self.pending_bytes, self.pending_stamped_bytes
            for row in rows:
                data = row[3]
                size = (len(data) if data.isascii() else len(data.encode())) + ROW_OVERHEAD
                if row[1] == row[2]:  # no device timestamp: every receipt is a reading
                    self.pending_rows.append(row)
                    plain[row[0]] = plain.get(row[0], 0) + size
                else:
                    self.pending_stamped.append((*row, row[0], row[1], row[3]))
                    stamped[row[0]] = stamped.get(row[0], 0) + size
            return None
        self.flush_rows()
        try:
            return op.apply(self)
        except (StorageError, DeclarationRejected) as exc:
            return Failed(exc)

    def apply_batch(self, ops: Sequence[Any]) -> list[Any]:
        self.erased_in_batch = False
        try:
            self._begin()
            try:
                outcomes = [self._apply(op) for op in ops]
                self.flush_rows()
                self.conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        except Exception:  # SQL, or a value SQLite cannot bind: isolate it
            outcomes = [self._apply_alone(op) for op in ops]
        if self.erased_in_batch:
            self._purge_wal()
        return outcomes

    def _apply_alone(self, op: Any) -> Any:
        try:
            self._begin()
            try:
                outcome = self._apply(op)
                self.flush_rows()
                self.conn.execute("COMMIT")
                return outcome
            except BaseException:
                self._rollback()
                raise
        except Exception as exc:  # this operation alone fails, never the writer
            return Failed(StorageError(f"{type(op).__name__} failed: {exc!r}"))

    def _rollback(self) -> None:
        self.pending_rows.clear()
        self.pending_stamped.clear()
        self.pending_bytes.clear()
        self.pending_stamped_bytes.clear()
        self.reset_caches()
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def _purge_wal(self) -> None:
        # Erased rows were overwritten in the database (secure_delete); their old page
        # images still sit in the WAL until a checkpoint copies and truncates it.
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass  # readers active: the next automatic checkpoint finishes the job


# -- operations ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Reports:
    rows: Sequence[ReportRow]

    def rows_for(self, side: WriteSide) -> list[tuple[int, int, int, str]]:
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


@dataclass(frozen=True, slots=True)
class Declare:
    network: UUID
    model: ModelDecl
    now: datetime
    limits: Limits

    def apply(self, side: WriteSide) -> NetworkTree:
        conn, now = side.conn, to_us(self.now)
        nid = side.network_id(self.network, now)
        self._check_caps(conn, nid)
        for dev in self.model.devices:
            row = conn.execute("SELECT id, description FROM devices WHERE network_id = ? "
                               "AND name = ?", (nid, dev.name)).fetchone()
            if row is None:
                did = conn.execute(
                    "INSERT INTO devices (uuid, network_id, name, description, created_us, "
                    "updated_us) VALUES (?, ?, ?, ?, ?, ?)",
                    (str(uuidlib.uuid4()), nid, dev.name, dev.description, now, now)).lastrowid
            else:
                did = row[0]
                if row[1] != dev.description:
                    conn.execute("UPDATE devices SET description = ?, updated_us = ? "
                                 "WHERE id = ?", (dev.description, now, did))
            for v in dev.values:
                decl = json.dumps(v.to_json(), sort_keys=True)
                row = conn.execute("SELECT id, decl FROM value_nodes WHERE device_id = ? "
                                   "AND name = ?", (did, v.name)).fetchone()
                if row is None:
                    vid = conn.execute(
                        "INSERT INTO value_nodes (uuid, device_id, network_id, name, decl, "
                        "created_us, updated_us) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (str(uuidlib.uuid4()), did, nid, v.name, decl, now, now)).lastrowid
                else:
                    vid = row[0]
                    if row[1] != decl:
                        conn.execute("UPDATE value_nodes SET decl = ?, updated_us = ? "
                                     "WHERE id = ?", (decl, now, vid))
                # States are created when the permission first needs them and never deleted:
                # a value that goes from rw to r keeps its Control history.
                kinds = ([REPORT] if v.permission.reportable else []) + (
                    [CONTROL] if v.permission.controllable else [])
                for kind in kinds:
                    conn.execute("INSERT OR IGNORE INTO states (uuid, value_id, network_id, "
                                 "kind) VALUES (?, ?, ?, ?)",
                                 (str(uuidlib.uuid4()), vid, nid, kind))
        side.report_states.clear()  # a value may have gained or lost reportability
        tree = load_tree(conn, self.network)
        assert tree is not None
        return tree

    def _check_caps(self, conn: sqlite3.Connection, nid: int) -> None:
        existing_devices = {name for (name,) in conn.execute(
            "SELECT name FROM devices WHERE network_id = ?", (nid,))}
        new_devices = {d.name for d in self.model.devices} - existing_devices
        if len(existing_devices) + len(new_devices) > self.limits.max_devices_per_network:
            raise DeclarationRejected([
                f"the network would have {len(existing_devices) + len(new_devices)} devices; "
                f"the limit is {self.limits.max_devices_per_network}"])
        existing_values = {(d, v) for d, v in conn.execute(
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

    def apply(self, side: WriteSide) -> StateRecord:
        sid = side.state_id(self.value, CONTROL)
        now = to_us(self.now)
        rid = side.conn.execute(
            "INSERT INTO state_log (state_id, ts_us, received_us, data) VALUES (?, ?, ?, ?)",
            (sid, now, now, self.data)).lastrowid
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
            "INSERT INTO connection_status (network_id, connections, connected_since_us, "
            "last_seen_us, cert_serial, client_id, disconnect_reason) "
            "VALUES (?, 1, ?, ?, ?, ?, NULL) ON CONFLICT (network_id) DO UPDATE SET "
            "connections = connections + 1, "
            "connected_since_us = CASE WHEN connections = 0 THEN excluded.connected_since_us "
            "ELSE connected_since_us END, last_seen_us = excluded.last_seen_us, "
            "cert_serial = excluded.cert_serial, client_id = excluded.client_id, "
            "disconnect_reason = NULL",
            (nid, now, now, self.cert_serial, self.client_id))
        side.conn.execute(
            "INSERT INTO connection_log (network_id, event, at_us, client_id, cert_serial) "
            "VALUES (?, 'connect', ?, ?, ?)", (nid, now, self.client_id, self.cert_serial))


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
            "UPDATE connection_status SET connections = max(connections - 1, 0), "
            "connected_since_us = CASE WHEN connections <= 1 THEN NULL "
            "ELSE connected_since_us END, last_seen_us = ?, disconnect_reason = ? "
            "WHERE network_id = ?", (now, self.reason, nid))
        side.conn.execute(
            "INSERT INTO connection_log (network_id, event, at_us, client_id, reason) "
            "VALUES (?, 'disconnect', ?, ?, ?)", (nid, now, self.client_id, self.reason))


@dataclass(frozen=True, slots=True)
class Seen:
    network: UUID
    now: datetime

    def apply(self, side: WriteSide) -> None:
        nid = side.network_id(self.network, to_us(self.now), create=False)
        if nid is not None:
            side.conn.execute("UPDATE connection_status SET last_seen_us = ? "
                              "WHERE network_id = ?", (to_us(self.now), nid))


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
                "VALUES (?, 'disconnect', ?, ?)", (nid, now, self.reason))
        side.conn.execute(
            "UPDATE connection_status SET connections = 0, connected_since_us = NULL, "
            "disconnect_reason = ? WHERE connections > 0", (self.reason,))
        return len(stale)


ERASE_ORDER = (
    # children before parents (foreign keys are on)
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

    def apply(self, side: WriteSide) -> bool:
        nid = side.network_id(self.network, 0, create=False)
        if nid is None:
            return False
        # The writer connection runs with secure_delete on for good (configure_writer): the
        # deleted cells are overwritten with zeros in their pages, never left behind.
        for table, where in ERASE_ORDER:
            side.conn.execute(f"DELETE FROM {table} WHERE {where}", (nid,))
        if self.audit is not None:
            audit_ops.append(side.conn, self.audit)
        side.reset_caches()
        side.erased_in_batch = True
        return True


def report_count(op: Any) -> int:
    return len(op.rows) if isinstance(op, Reports) else 0


__all__ = [
    "Control", "Declare", "Erase", "MarkConnected", "MarkDisconnected", "Reports",
    "ResetConnections", "Seen", "UnknownValue", "WriteSide", "from_us", "report_count",
]
