"""The read side, written once for both engines: plain functions of a reader's `Dialect`.

The stores run each in a worker thread on a reader connection: SQLite's own read connection
(WAL: it never waits for the writer), or one of PostgreSQL's reader pool inside one
REPEATABLE READ transaction. A function that reads more than one statement reads them in
one snapshot (`Dialect.snapshot`), so it never sees a half-applied batch.
"""

from __future__ import annotations

import json
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
from .dialect import Dialect


def tree(db: Dialect, network: UUID) -> NetworkTree | None:
    with db.snapshot():
        return load_tree(db, network)


def find_value(db: Dialect, value: UUID) -> ValueLocation | None:
    with db.snapshot():
        row = db.execute(
            "SELECT v.id, v.decl, d.uuid, d.name, n.uuid FROM value_nodes v "
            "JOIN devices d ON d.id = v.device_id JOIN networks n ON n.id = v.network_id "
            "WHERE v.uuid = ?", (db.uuid_in(value),)).fetchone()
        if row is None:
            return None
        vid, decl, device_uuid, device_name, network_uuid = row
        states = tuple(StateNode(db.uuid_out(u), CODE_KIND[k]) for u, k in db.execute(
            "SELECT uuid, kind FROM states WHERE value_id = ? ORDER BY kind", (vid,)))
    node = ValueNode(value, value_decl_from_json(json.loads(decl)), states)
    return ValueLocation(db.uuid_out(network_uuid), db.uuid_out(device_uuid), device_name,
                         node)


def find_device(db: Dialect, device: UUID) -> tuple[UUID, DeviceNode] | None:
    """(network UUID, the device with its values) for a device UUID, or None."""
    with db.snapshot():
        row = db.execute(
            "SELECT n.uuid FROM devices d JOIN networks n ON n.id = d.network_id "
            "WHERE d.uuid = ?", (db.uuid_in(device),)).fetchone()
        network = None if row is None else load_tree(db, db.uuid_out(row[0]))
    for node in network.devices if network else ():
        if node.uuid == device:
            return network.uuid, node
    return None


def _record(value: UUID, kind: StateKind, row: tuple) -> StateRecord:
    rid, ts, received, data = row
    return StateRecord(rid, value, kind, data, from_us(ts), from_us(received))


def history(db: Dialect, value: UUID, kind: StateKind, since: datetime | None,
            until: datetime | None, limit: int, newest_first: bool,
            after: StateRecord | None) -> list[StateRecord]:
    """States of one value with since <= timestamp < until, ordered by (timestamp, id).

    `after` is the last record of the previous page (a keyset cursor: stable under inserts).
    The time bounds let PostgreSQL read only the weeks' partitions they cover.
    """
    row = db.execute(
        "SELECT s.id FROM states s JOIN value_nodes v ON v.id = s.value_id "
        "WHERE v.uuid = ? AND s.kind = ?", (db.uuid_in(value), KIND_CODE[kind])).fetchone()
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
    rows = db.execute(
        f"SELECT id, ts_us, received_us, data FROM state_log WHERE {' AND '.join(clauses)} "
        f"ORDER BY ts_us {order}, id {order} LIMIT ?", (*params, limit)).fetchall()
    return [_record(value, kind, r) for r in rows]


def latest_states(db: Dialect, network: UUID) -> dict[UUID, StateRecord]:
    """The newest (by timestamp) entry of every state of a network, keyed by state UUID."""
    out: dict[UUID, StateRecord] = {}
    uuid_out = db.uuid_out
    for suuid, kind, vuuid, *rest in db.execute(db.LATEST_STATES, (db.uuid_in(network),)
                                                ).fetchall():
        out[uuid_out(suuid)] = _record(uuid_out(vuuid), CODE_KIND[kind], tuple(rest))
    return out


_STATUS = ("SELECT n.uuid, c.connections, c.connected_since_us, c.last_seen_us, c.cert_serial, "
           "c.client_id, c.disconnect_reason FROM networks n "
           "LEFT JOIN connection_status c ON c.network_id = n.id")


def _status(db: Dialect, row: tuple) -> ConnectionStatus:
    uuid, connections, since, seen, serial, client_id, reason = row
    return ConnectionStatus(db.uuid_out(uuid), bool(connections), connections or 0,
                            from_us(since), from_us(seen), serial, client_id, reason)


def connection_status(db: Dialect, network: UUID) -> ConnectionStatus | None:
    row = db.execute(f"{_STATUS} WHERE n.uuid = ?", (db.uuid_in(network),)).fetchone()
    return None if row is None else _status(db, row)


def list_networks(db: Dialect, limit: int, after: UUID | None) -> list[ConnectionStatus]:
    """Networks ordered by UUID, `limit` at a time after `after` (keyset paging on the
    unique index). PostgreSQL orders uuids by their bytes, which is the order of their text
    form too: SQLite's order."""
    if after is None:
        rows = db.execute(f"{_STATUS} ORDER BY n.uuid LIMIT ?", (limit,)).fetchall()
    else:
        rows = db.execute(f"{_STATUS} WHERE n.uuid > ? ORDER BY n.uuid LIMIT ?",
                          (db.uuid_in(after), limit)).fetchall()
    return [_status(db, r) for r in rows]


def connection_history(db: Dialect, network: UUID, limit: int) -> list[ConnectionEvent]:
    rows = db.execute(
        "SELECT l.event, l.at_us, l.client_id, l.cert_serial, l.reason FROM connection_log l "
        "JOIN networks n ON n.id = l.network_id WHERE n.uuid = ? "
        "ORDER BY l.at_us DESC, l.id DESC LIMIT ?", (db.uuid_in(network), limit)).fetchall()
    return [ConnectionEvent(network, e, from_us(at), c, s, r) for e, at, c, s, r in rows]


def retained(db: Dialect, network: UUID) -> list[RetainedMessage]:
    rows = db.execute(
        "SELECT r.topic, r.payload, r.qos, r.properties, r.expires_us FROM retained r "
        "JOIN networks n ON n.id = r.network_id "
        f"WHERE n.uuid = ? ORDER BY r.topic{db.byte_order}", (db.uuid_in(network),)).fetchall()
    return [RetainedMessage(t, bytes(p), q, bytes(props), from_us(exp))
            for t, p, q, props, exp in rows]


def sessions(db: Dialect, network: UUID | None, with_queued: bool = True
             ) -> list[StoredSession]:
    """Persistent sessions (all networks, or one) with subscriptions, queue counts and, when
    `with_queued`, their queued messages (start-up reads none: they load on reconnect)."""
    with db.snapshot():
        where, params = ("WHERE n.uuid = ?", (db.uuid_in(network),)) if network else ("", ())
        rows = db.execute(
            "SELECT n.id, n.uuid, s.client_id, s.expiry_interval FROM sessions s "
            f"JOIN networks n ON n.id = s.network_id {where} "
            f"ORDER BY n.uuid, s.client_id{db.byte_order}", params).fetchall()
        out = []
        for nid, nuuid, client_id, expiry in rows:
            subs = tuple(db.execute(
                "SELECT filter, qos FROM subscriptions WHERE network_id = ? AND client_id = ? "
                f"ORDER BY filter{db.byte_order}", (nid, client_id)).fetchall())
            count, size, upto = db.execute(
                "SELECT count(*), coalesce(sum(length(m.payload)), 0), "
                "coalesce(max(r.id), 0) FROM queued_refs r "
                "JOIN queued_messages m ON m.id = r.message_id "
                "WHERE r.network_id = ? AND r.client_id = ?", (nid, client_id)).fetchone()
            queued = _queued(db, nid, client_id, upto) if with_queued else ()
            out.append(StoredSession(db.uuid_out(nuuid), client_id, subs, queued, count,
                                     int(size), upto, expiry))
    return out


def _queued(db: Dialect, nid: int, client_id: str, upto: int) -> tuple[QueuedMessage, ...]:
    return tuple(QueuedMessage(i, t, bytes(p), q, bool(r), bytes(props), from_us(exp))
                 for i, t, p, q, r, props, exp in db.execute(
        "SELECT r.id, m.topic, m.payload, r.qos, r.retain, m.properties, m.expires_us "
        "FROM queued_refs r JOIN queued_messages m ON m.id = r.message_id "
        "WHERE r.network_id = ? AND r.client_id = ? AND r.id <= ? ORDER BY r.id",
        (nid, client_id, upto)))


def queued(db: Dialect, network: UUID, client_id: str, upto: int) -> list[QueuedMessage]:
    """One session's queued messages with ids up to `upto`, oldest first."""
    row = db.execute("SELECT id FROM networks WHERE uuid = ?", (db.uuid_in(network),)
                     ).fetchone()
    return [] if row is None else list(_queued(db, row[0], client_id, upto))


def stored_bytes(db: Dialect, network: UUID) -> int:
    """The network's `network_usage` row (0 when it has stored nothing)."""
    row = db.execute(
        "SELECT u.stored_bytes FROM network_usage u JOIN networks n ON n.id = u.network_id "
        "WHERE n.uuid = ?", (db.uuid_in(network),)).fetchone()
    return 0 if row is None else row[0]
