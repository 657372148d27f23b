"""The read side: queries on the read connection (WAL: they never wait for the writer).

Plain functions of a connection, run in a worker thread by the store. Each reads one
consistent snapshot (one transaction) where it reads more than one statement.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from datetime import datetime
from uuid import UUID

from gateway.model.declarations import value_decl_from_json
from gateway.model.tree import DeviceNode, NetworkTree, StateKind, StateNode, ValueNode

from ..records import (
    ConnectionEvent,
    ConnectionStatus,
    QueuedMessage,
    RetainedMessage,
    StateRecord,
    StoredSession,
    ValueLocation,
)
from .convert import CODE_KIND, KIND_CODE, from_us, load_tree, to_us


@contextmanager
def snapshot(conn: sqlite3.Connection):
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


def tree(conn: sqlite3.Connection, network: UUID) -> NetworkTree | None:
    with snapshot(conn):
        return load_tree(conn, network)


def find_value(conn: sqlite3.Connection, value: UUID) -> ValueLocation | None:
    with snapshot(conn):
        row = conn.execute(
            "SELECT v.id, v.decl, d.uuid, d.name, n.uuid FROM value_nodes v "
            "JOIN devices d ON d.id = v.device_id JOIN networks n ON n.id = v.network_id "
            "WHERE v.uuid = ?", (str(value),)).fetchone()
        if row is None:
            return None
        vid, decl, device_uuid, device_name, network_uuid = row
        states = tuple(StateNode(UUID(u), CODE_KIND[k]) for u, k in conn.execute(
            "SELECT uuid, kind FROM states WHERE value_id = ? ORDER BY kind", (vid,)))
    node = ValueNode(value, value_decl_from_json(json.loads(decl)), states)
    return ValueLocation(UUID(network_uuid), UUID(device_uuid), device_name, node)


def find_device(conn: sqlite3.Connection, device: UUID) -> tuple[UUID, DeviceNode] | None:
    """(network UUID, the device with its values) for a device UUID, or None."""
    with snapshot(conn):
        row = conn.execute(
            "SELECT n.uuid FROM devices d JOIN networks n ON n.id = d.network_id "
            "WHERE d.uuid = ?", (str(device),)).fetchone()
        network = None if row is None else load_tree(conn, UUID(row[0]))
    for node in network.devices if network else ():
        if node.uuid == device:
            return network.uuid, node
    return None


def _record(value: UUID, kind: StateKind, row: tuple) -> StateRecord:
    rid, ts, received, data = row
    return StateRecord(rid, value, kind, data, from_us(ts), from_us(received))


def history(
    conn: sqlite3.Connection,
    value: UUID,
    kind: StateKind,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    newest_first: bool,
    after: StateRecord | None,
) -> list[StateRecord]:
    """States of one value with since <= timestamp < until, ordered by (timestamp, id).

    `after` is the last record of the previous page (a keyset cursor: stable under inserts).
    """
    row = conn.execute(
        "SELECT s.id FROM states s JOIN value_nodes v ON v.id = s.value_id "
        "WHERE v.uuid = ? AND s.kind = ?", (str(value), KIND_CODE[kind])).fetchone()
    if row is None:
        return []
    clauses, params = ["state_id = ?"], [row[0]]
    if since is not None:
        clauses.append("ts_us >= ?")
        params.append(to_us(since))
    if until is not None:
        clauses.append("ts_us < ?")
        params.append(to_us(until))
    if after is not None:
        op = "<" if newest_first else ">"
        clauses.append(f"(ts_us, id) {op} (?, ?)")
        params += [to_us(after.timestamp), after.id]
    order = "DESC" if newest_first else "ASC"
    rows = conn.execute(
        f"SELECT id, ts_us, received_us, data FROM state_log WHERE {' AND '.join(clauses)} "
        f"ORDER BY ts_us {order}, id {order} LIMIT ?", (*params, limit)).fetchall()
    return [_record(value, kind, r) for r in rows]


def latest_states(conn: sqlite3.Connection, network: UUID) -> dict[UUID, StateRecord]:
    """The newest (by timestamp) entry of every state of a network, keyed by state UUID."""
    out: dict[UUID, StateRecord] = {}
    with snapshot(conn):
        states = conn.execute(
            "SELECT s.id, s.uuid, s.kind, v.uuid FROM states s "
            "JOIN value_nodes v ON v.id = s.value_id JOIN networks n ON n.id = s.network_id "
            "WHERE n.uuid = ?", (str(network),)).fetchall()
        for sid, suuid, kind, vuuid in states:
            row = conn.execute(
                "SELECT id, ts_us, received_us, data FROM state_log WHERE state_id = ? "
                "ORDER BY ts_us DESC, id DESC LIMIT 1", (sid,)).fetchone()
            if row is not None:
                out[UUID(suuid)] = _record(UUID(vuuid), CODE_KIND[kind], row)
    return out


_STATUS = ("SELECT n.uuid, c.connections, c.connected_since_us, c.last_seen_us, c.cert_serial, "
           "c.client_id, c.disconnect_reason FROM networks n "
           "LEFT JOIN connection_status c ON c.network_id = n.id")


def _status(row: tuple) -> ConnectionStatus:
    uuid, connections, since, seen, serial, client_id, reason = row
    return ConnectionStatus(UUID(uuid), bool(connections), connections or 0, from_us(since),
                            from_us(seen), serial, client_id, reason)


def connection_status(conn: sqlite3.Connection, network: UUID) -> ConnectionStatus | None:
    row = conn.execute(f"{_STATUS} WHERE n.uuid = ?", (str(network),)).fetchone()
    return None if row is None else _status(row)


def list_networks(conn: sqlite3.Connection, limit: int, after: UUID | None
                  ) -> list[ConnectionStatus]:
    """Networks ordered by UUID, `limit` at a time after `after` (keyset paging)."""
    rows = conn.execute(f"{_STATUS} WHERE n.uuid > ? ORDER BY n.uuid LIMIT ?",
                        ("" if after is None else str(after), limit)).fetchall()
    return [_status(r) for r in rows]


def connection_history(conn: sqlite3.Connection, network: UUID, limit: int
                       ) -> list[ConnectionEvent]:
    rows = conn.execute(
        "SELECT l.event, l.at_us, l.client_id, l.cert_serial, l.reason FROM connection_log l "
        "JOIN networks n ON n.id = l.network_id WHERE n.uuid = ? "
        "ORDER BY l.at_us DESC, l.id DESC LIMIT ?", (str(network), limit)).fetchall()
    return [ConnectionEvent(network, e, from_us(at), c, s, r) for e, at, c, s, r in rows]


def retained(conn: sqlite3.Connection, network: UUID) -> list[RetainedMessage]:
    rows = conn.execute(
        "SELECT r.topic, r.payload, r.qos, r.properties, r.expires_us FROM retained r "
        "JOIN networks n ON n.id = r.network_id "
        "WHERE n.uuid = ? ORDER BY r.topic", (str(network),)).fetchall()
    return [RetainedMessage(t, bytes(p), q, bytes(props), from_us(exp))
            for t, p, q, props, exp in rows]


def sessions(conn: sqlite3.Connection, network: UUID | None, with_queued: bool = True
             ) -> list[StoredSession]:
    """Persistent sessions (all networks, or one) with subscriptions, queue counts and, when
    `with_queued`, their queued messages (start-up reads none: they load on reconnect)."""
    with snapshot(conn):
        where, params = ("WHERE n.uuid = ?", (str(network),)) if network else ("", ())
        rows = conn.execute(
            "SELECT n.id, n.uuid, s.client_id, s.expiry_interval FROM sessions s "
            f"JOIN networks n ON n.id = s.network_id {where} ORDER BY n.uuid, s.client_id",
            params).fetchall()
        out = []
        for nid, nuuid, client_id, expiry in rows:
            subs = tuple(conn.execute(
                "SELECT filter, qos FROM subscriptions WHERE network_id = ? AND client_id = ? "
                "ORDER BY filter", (nid, client_id)).fetchall())
            count, size, upto = conn.execute(
                "SELECT count(*), coalesce(sum(length(m.payload)), 0), coalesce(max(r.id), 0) "
                "FROM queued_refs r JOIN queued_messages m ON m.id = r.message_id "
                "WHERE r.network_id = ? AND r.client_id = ?", (nid, client_id)).fetchone()
            queued = _queued(conn, nid, client_id, upto) if with_queued else ()
            out.append(StoredSession(UUID(nuuid), client_id, subs, queued, count, size, upto,
                                     expiry))
    return out


def _queued(conn: sqlite3.Connection, nid: int, client_id: str, upto: int
            ) -> tuple[QueuedMessage, ...]:
    return tuple(QueuedMessage(i, t, bytes(p), q, bool(r), bytes(props), from_us(exp))
                 for i, t, p, q, r, props, exp in conn.execute(
        "SELECT r.id, m.topic, m.payload, r.qos, r.retain, m.properties, m.expires_us "
        "FROM queued_refs r "
        "JOIN queued_messages m ON m.id = r.message_id "
        "WHERE r.network_id = ? AND r.client_id = ? AND r.id <= ? ORDER BY r.id",
        (nid, client_id, upto)))


def queued(conn: sqlite3.Connection, network: UUID, client_id: str, upto: int
           ) -> list[QueuedMessage]:
    """One session's queued messages with ids up to `upto`, oldest first."""
    row = conn.execute("SELECT id FROM networks WHERE uuid = ?", (str(network),)).fetchone()
    return [] if row is None else list(_queued(conn, row[0], client_id, upto))


def stored_bytes(conn: sqlite3.Connection, network: UUID) -> int:
    """The network's `network_usage` row (0 when it has stored nothing)."""
    row = conn.execute(
        "SELECT u.stored_bytes FROM network_usage u JOIN networks n ON n.id = u.network_id "
        "WHERE n.uuid = ?", (str(network),)).fetchone()
    return 0 if row is None else row[0]
