"""The write side of the broker's MQTT state on PostgreSQL: retained messages, persistent
sessions and their subscriptions, and queued messages stored once with one reference per
session copy (`queued_messages` + `queued_refs`; a message row goes when its last reference
does). MQTT 5 properties (wire bytes) and expiry travel with retained and queued messages,
a session's expiry interval with the session.

Operations like those of `data_ops`, run by the single writer, many per transaction.
`SessionChanges` applies the broker journal's changes in their order.
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
from .ops import WriteSide


@dataclass(frozen=True, slots=True)
class SetRetained:
    network: UUID
    topic: str
    payload: bytes
    qos: int
    now: datetime
    properties: bytes = b""
    expires_at: datetime | None = None

    def apply(self, side: WriteSide) -> None:
        nid = side.network_id(self.network, to_us(self.now))
        if not self.payload:  # MQTT 3.1.1 section 3.3.1.3: empty payload clears it
            side.conn.execute("DELETE FROM retained WHERE network_id = %s AND topic = %s",
                              (nid, self.topic))
        else:
            side.conn.execute(
                "INSERT INTO retained (network_id, topic, payload, qos, properties, expires_us) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (network_id, topic) DO UPDATE SET "
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

    def apply(self, side: WriteSide) -> None:
        nid = side.network_id(self.network, to_us(self.now))
        conn = side.conn
        conn.execute(
            "INSERT INTO sessions (network_id, client_id, expiry_interval) VALUES (%s, %s, %s) "
            "ON CONFLICT (network_id, client_id) DO UPDATE SET "
            "expiry_interval = excluded.expiry_interval",
            (nid, self.client_id, self.expiry_interval))
        conn.execute("DELETE FROM subscriptions WHERE network_id = %s AND client_id = %s",
                     (nid, self.client_id))
        if self.subscriptions:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO subscriptions (network_id, client_id, filter, qos) "
                    "VALUES (%s, %s, %s, %s)",
                    [(nid, self.client_id, f, q) for f, q in self.subscriptions])


def _drop_orphans(side: WriteSide, message_ids: Sequence[int]) -> None:
    """Delete the queued messages among `message_ids` that no session references any more."""
    if message_ids:
        side.conn.execute(
            "DELETE FROM queued_messages m WHERE m.id = ANY(%s) AND NOT EXISTS "
            "(SELECT 1 FROM queued_refs r WHERE r.message_id = m.id)", (list(message_ids),))


@dataclass(frozen=True, slots=True)
class DeleteSession:
    network: UUID
    client_id: str

    def apply(self, side: WriteSide) -> None:
        nid = side.network_id(self.network, 0, create=False)
        if nid is None:
            return
        key = (nid, self.client_id)
        held = [m for (m,) in side.conn.execute(
            "DELETE FROM queued_refs WHERE network_id = %s AND client_id = %s "
            "RETURNING message_id", key)]
        for table in ("subscriptions", "sessions"):
            side.conn.execute(f"DELETE FROM {table} WHERE network_id = %s AND client_id = %s",
                              key)
        _drop_orphans(side, sorted(set(held)))


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

    def apply(self, side: WriteSide) -> list[int]:
        if not self.copies:
            return []
        nid = side.network_id(self.network, to_us(self.now))
        conn = side.conn
        clients = [client for client, _ in self.copies]
        conn.execute(
            "INSERT INTO sessions (network_id, client_id) SELECT %s, c FROM unnest(%s::text[]) c "
            "ON CONFLICT DO NOTHING", (nid, clients))
        (message_id,) = conn.execute(
            "INSERT INTO queued_messages (network_id, topic, payload, properties, expires_us) "
            "VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (nid, self.topic, self.payload, self.properties, opt_us(self.expires_at))
        ).fetchone()
        rows = conn.execute(
            "INSERT INTO queued_refs (network_id, client_id, message_id, qos, retain) "
            "SELECT %s, c, %s, q, %s FROM unnest(%s::text[], %s::int2[]) "
            "WITH ORDINALITY AS t(c, q, n) ORDER BY n RETURNING id",
            (nid, message_id, bool(self.retain), clients, [q for _, q in self.copies])
        ).fetchall()
        return sorted(i for (i,) in rows)  # ids follow the copies' order (one sequence)


@dataclass(frozen=True, slots=True)
class Enqueue:
    """Queue messages for ONE session (each stored with a single reference)."""

    network: UUID
    client_id: str
    messages: tuple[tuple[str, bytes, int, bool], ...]  # topic, payload, qos, retain
    now: datetime

    def apply(self, side: WriteSide) -> list[int]:
        return [i for topic, payload, qos, retain in self.messages
                for i in EnqueueMany(self.network, topic, payload, retain,
                                     ((self.client_id, qos),), self.now).apply(side)]


@dataclass(frozen=True, slots=True)
class Dequeue:
    network: UUID
    client_id: str
    ids: tuple[int, ...]

    def apply(self, side: WriteSide) -> None:
        nid = side.network_id(self.network, 0, create=False)
        if nid is None or not self.ids:
            return
        held = [m for (m,) in side.conn.execute(
            "DELETE FROM queued_refs WHERE id = ANY(%s) AND network_id = %s "
            "AND client_id = %s RETURNING message_id",
            (list(self.ids), nid, self.client_id))]
        _drop_orphans(side, sorted(set(held)))


@dataclass(frozen=True, slots=True)
class SessionChanges:
    """The broker's MQTT state changes, in order; returns the new queued messages' ids."""

    changes: tuple[SessionChange, ...]
    now: datetime

    def apply(self, side: WriteSide) -> list[int]:
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
