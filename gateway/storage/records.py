"""Values going in and out of a store (frozen, slotted; datetimes UTC-aware)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from gateway.latency import Histogram
from gateway.model.tree import ReportRow, StateKind, ValueNode

__all__ = ["ReportRow"]  # defined beside the tree: ingest builds it and must not import us


@dataclass(frozen=True, slots=True)
class StateRecord:
    """One stored Report or Control state. `id` orders rows and serves as a paging cursor."""

    id: int
    value: UUID
    kind: StateKind
    data: str
    timestamp: datetime
    received: datetime


@dataclass(frozen=True, slots=True)
class ConnectionStatus:
    network: UUID
    online: bool
    connections: int  # live MQTT connections of this network (clients of one jail)
    connected_since: datetime | None
    last_seen: datetime | None
    cert_serial: str | None
    client_id: str | None
    disconnect_reason: str | None


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    network: UUID
    event: str  # "connect" or "disconnect"
    at: datetime
    client_id: str | None
    cert_serial: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class RetainedMessage:
    topic: str  # device-relative (inside the jail)
    payload: bytes
    qos: int
    properties: bytes = b""  # MQTT 5 properties as sent on the wire (b"" for 3.1.1)
    expires_at: datetime | None = None  # MQTT 5 message expiry: never delivered after it


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    id: int  # pass back to `Store.dequeue` once delivered
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: bytes = b""  # MQTT 5 properties as sent on the wire (b"" for 3.1.1)
    expires_at: datetime | None = None  # MQTT 5 message expiry: never delivered after it


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A persistent (clean session 0) MQTT session as it survives a restart.

    A subscription's grant is one integer: the MQTT 5 subscription options byte (granted QoS
    in bits 0-1, so a 3.1.1 grant is just its QoS; no local, retain as published and retain
    handling above it) plus the subscription identifier times 256 (0: none).

    `queued` is empty when read without payloads (`load_sessions(queued=False)`); the
    counts describe the queue either way, and `queued_upto` is its highest id."""

    network: UUID
    client_id: str
    subscriptions: tuple[tuple[str, int], ...]  # (device-relative filter, grant): see below
    queued: tuple[QueuedMessage, ...]
    queued_count: int = 0
    queued_bytes: int = 0
    queued_upto: int = 0
    expiry_interval: int | None = None  # MQTT 5 session expiry in seconds; None: never


@dataclass(frozen=True, slots=True)
class RetainedChange:
    """Set a retained message of the jail (an empty payload clears it)."""

    network: UUID
    topic: str  # device-relative
    payload: bytes
    qos: int
    properties: bytes = b""  # MQTT 5 properties as sent on the wire (b"" for 3.1.1)
    expires_at: datetime | None = None  # MQTT 5 message expiry: never delivered after it


@dataclass(frozen=True, slots=True)
class SessionSaved:
    """Create a persistent session or replace its subscriptions."""

    network: UUID
    client_id: str
    subscriptions: tuple[tuple[str, int], ...]  # (device-relative filter, grant): see below
    expiry_interval: int | None = None  # MQTT 5 session expiry in seconds; None: never


@dataclass(frozen=True, slots=True)
class SessionDeleted:
    network: UUID
    client_id: str


@dataclass(frozen=True, slots=True)
class Enqueued:
    """A QoS 1/2 message queued for an offline session; its id is in the commit's result."""

    network: UUID
    client_id: str
    topic: str  # device-relative
    payload: bytes
    qos: int
    retain: bool
    properties: bytes = b""  # MQTT 5 properties as sent on the wire (b"" for 3.1.1)
    expires_at: datetime | None = None  # MQTT 5 message expiry: never delivered after it


@dataclass(frozen=True, slots=True)
class EnqueuedMany:
    """One QoS 1/2 message queued for several offline sessions: stored once, referenced by
    each; the commit's result holds one id per copy, in order."""

    network: UUID
    topic: str  # device-relative
    payload: bytes
    retain: bool
    copies: tuple[tuple[str, int], ...]  # (client id, QoS of that session's copy)
    properties: bytes = b""  # MQTT 5 properties as sent on the wire (b"" for 3.1.1)
    expires_at: datetime | None = None  # MQTT 5 message expiry: never delivered after it


@dataclass(frozen=True, slots=True)
class Dequeued:
    network: UUID
    client_id: str
    id: int


SessionChange = (RetainedChange | SessionSaved | SessionDeleted | Enqueued | EnqueuedMany
                 | Dequeued)
"""One change of the MQTT state that must survive a restart (`Store.submit_session_changes`)."""


@dataclass(frozen=True, slots=True)
class ValueLocation:
    """Where a value lives: for `control` (its topic) and the HTTP API."""

    network: UUID
    device: UUID
    device_name: str
    value: ValueNode


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    queued: int  # write operations waiting for the writer
    queue_capacity: int
    producers_waiting: int  # tasks blocked by backpressure
    commits: int  # transactions committed
    operations: int  # write operations committed
    reports: int  # report rows committed
    failed_operations: int
    busy_retries: int  # commits retried because another process held the write lock
    last_batch: int  # operations in the last transaction
    last_commit_seconds: float
    queued_reports: int = 0  # the queued operations' cost: readings (others: changes or 1)
    queued_networks: int = 0  # networks (and the shared queue) with queued operations
    waits_network_full: int = 0  # submits that waited: their network's queue was full
    waits_total_full: int = 0  # ... the total was full and they held at least their share
    largest_queues: tuple[tuple[str, int, int], ...] = ()  # top 5: (network, ops, cost)
    commit_latency: Histogram | None = None  # every commit's duration
