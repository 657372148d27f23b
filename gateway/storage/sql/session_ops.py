"""The write side of the broker's MQTT state, written once for both engines: retained
messages, persistent sessions and their subscriptions, and queued messages stored once with
one reference per session copy (`queued_messages` + `queued_refs`; a message row goes when
its last reference does). MQTT 5 properties (wire bytes) and expiry travel with retained and
queued messages, a session's expiry interval with the session.

Operations like those of data_ops.py: frozen values with `apply(side)`, run by the single
writer in its worker thread, many per transaction. `SessionChanges` applies the broker
journal's changes in their order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from ..errors import StorageError
from ..records import (
    Dequeued,
    Enqueued,
    EnqueuedMany,
    RetainedChange,
    SessionChange,
    SessionDeleted,
    SessionSaved,
)
from .convert import opt_us, to_us
from .write_side import WriteSideBase


@dataclass(frozen=True, slots=True)
class SetRetained:
    network: UUID
    topic: str
    payload: bytes
    qos: int
    now: datetime
    properties: bytes = b""
    expires_at: datetime | None = None

    def apply(self, side: WriteSideBase) -> None:
        nid = side.network_id(self.network, to_us(self.now))
        if not self.payload:  # MQTT 3.1.1 section 3.3.1.3: empty payload clears it
            side.db.execute("DELETE FROM retained WHERE network_id = ? AND topic = ?",
                            (nid, self.topic))
        else:
            side.db.execute(
                "INSERT INTO retained (network_id, topic, payload, qos, properties, expires_us) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (network_id, topic) DO UPDATE SET "
                "payload = excluded.payload, qos = excluded.qos, "
                "properties = excluded.properties, expires_us = excluded.expires_us",
                (nid, self.topic, self.payload, self.qos, self.properties,
                 opt_us(self.expires_at)))


@dataclass(frozen=True, slots=True)
class SaveSession:
    network: UUID
    client_id: str
    subscriptions: tuple[tuple[str, int], ...]  # (filter, grant: options + id * 256)
    now: datetime
    expiry_interval: int | None = None  # MQTT 5 session expiry (s); None: never

    def apply(self, side: WriteSideBase) -> None:
        nid = side.network_id(self.network, to_us(self.now))
        db = side.db
        db.execute(
            "INSERT INTO sessions (network_id, client_id, expiry_interval) VALUES (?, ?, ?) "
            "ON CONFLICT (network_id, client_id) DO UPDATE SET "
            "expiry_interval = excluded.expiry_interval",
            (nid, self.client_id, self.expiry_interval))
        db.execute("DELETE FROM subscriptions WHERE network_id = ? AND client_id = ?",
                   (nid, self.client_id))
        db.executemany(
            "INSERT INTO subscriptions (network_id, client_id, filter, qos) VALUES (?, ?, ?, ?)",
            [(nid, self.client_id, f, q) for f, q in self.subscriptions])


def _drop_orphans(side: WriteSideBase, message_ids: Sequence[int]) -> None:
    """Delete the queued messages among `message_ids` that no session references any more."""
    if message_ids:
        db = side.db
        db.execute(
            f"DELETE FROM queued_messages AS m WHERE {db.id_in('m.id')} AND NOT EXISTS "
            "(SELECT 1 FROM queued_refs r WHERE r.message_id = m.id)",
            (db.id_list(message_ids),))


@dataclass(frozen=True, slots=True)
class DeleteSession:
    network: UUID
    client_id: str

    def apply(self, side: WriteSideBase) -> None:
        nid = side.network_id(self.network, 0, create=False)
        if nid is None:
            return
        key = (nid, self.client_id)
        held = {m for (m,) in side.db.execute(
            "DELETE FROM queued_refs WHERE network_id = ? AND client_id = ? "
            "RETURNING message_id", key)}
        for table in ("subscriptions", "sessions"):
            side.db.execute(f"DELETE FROM {table} WHERE network_id = ? AND client_id = ?", key)
        _drop_orphans(side, sorted(held))


@dataclass(frozen=True, slots=True)
class EnqueueMany:
    """One message row, one reference per session copy; returns the references' ids."""

    network: UUID
    topic: str
    payload: bytes
    retain: bool
    copies: tuple[tuple[str, int], ...]  # (client id, qos)
    now: datetime
    properties: bytes = b""
    expires_at: datetime | None = None

    def apply(self, side: WriteSideBase) -> list[int]:
        if not self.copies:
            return []
        nid = side.network_id(self.network, to_us(self.now))
        db = side.db
        db.add_sessions(nid, [client for client, _ in self.copies])
        (message_id,) = db.execute(
            "INSERT INTO queued_messages (network_id, topic, payload, properties, expires_us) "
            "VALUES (?, ?, ?, ?, ?) RETURNING id",
            (nid, self.topic, self.payload, self.properties, opt_us(self.expires_at))
        ).fetchone()
        return db.insert_refs(nid, message_id, bool(self.retain), self.copies)


@dataclass(frozen=True, slots=True)
class Enqueue:
    """Queue messages for ONE session (each stored with a single reference)."""

    network: UUID
    client_id: str
    messages: tuple[tuple[str, bytes, int, bool], ...]  # topic, payload, qos, retain
    now: datetime

    def apply(self, side: WriteSideBase) -> list[int]:
        return [i for topic, payload, qos, retain in self.messages
                for i in EnqueueMany(self.network, topic, payload, retain,
                                     ((self.client_id, qos),), self.now).apply(side)]


@dataclass(frozen=True, slots=True)
class Dequeue:
    network: UUID
    client_id: str
    ids: tuple[int, ...]

    def apply(self, side: WriteSideBase) -> None:
        nid = side.network_id(self.network, 0, create=False)
        if nid is None or not self.ids:
            return
        db = side.db
        held = {m for (m,) in db.execute(
            f"DELETE FROM queued_refs WHERE {db.id_in('id')} AND network_id = ? "
            "AND client_id = ? RETURNING message_id",
            (db.id_list(self.ids), nid, self.client_id))}
        _drop_orphans(side, sorted(held))


@dataclass(frozen=True, slots=True)
class SessionChanges:
    """The broker's MQTT state changes, in order; returns the new queued messages' ids."""

    changes: tuple[SessionChange, ...]
    now: datetime

    def apply(self, side: WriteSideBase) -> list[int]:
        ids: list[int] = []
        now = self.now
        for c in self.changes:
            if isinstance(c, Enqueued):
                ids.extend(EnqueueMany(c.network, c.topic, c.payload, c.retain,
                                       ((c.client_id, c.qos),), now, c.properties,
                                       c.expires_at).apply(side))
            elif isinstance(c, EnqueuedMany):
                ids.extend(EnqueueMany(c.network, c.topic, c.payload, c.retain, c.copies,
                                       now, c.properties, c.expires_at).apply(side))
            elif isinstance(c, Dequeued):
                Dequeue(c.network, c.client_id, (c.id,)).apply(side)
            elif isinstance(c, RetainedChange):
                if c.payload or side.network_id(c.network, 0, create=False) is not None:
                    SetRetained(c.network, c.topic, c.payload, c.qos, now, c.properties,
                                c.expires_at).apply(side)
            elif isinstance(c, SessionSaved):
                SaveSession(c.network, c.client_id, c.subscriptions, now,
                            c.expiry_interval).apply(side)
            elif isinstance(c, SessionDeleted):
                DeleteSession(c.network, c.client_id).apply(side)
            else:  # pragma: no cover - the union is closed
                raise StorageError(f"unknown session change {c!r}")
        return ids


__all__ = ["DeleteSession", "Dequeue", "Enqueue", "EnqueueMany", "SaveSession",
           "SessionChanges", "SetRetained"]
