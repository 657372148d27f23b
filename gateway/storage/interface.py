"""The storage interface: what the gateway, ingest and the HTTP API need from a store.

`Store` is a `typing.Protocol`; `SQLiteStore` is the embedded implementation and a PostgreSQL
one (psycopg 3 in a worker thread) will be another, with no change to its callers.

Contract every implementation keeps:
- Writes go through ONE writer with group commit, fed by one FIFO queue per network served
  fairly (writes of one network keep their order; those of different networks may be
  reordered). `submit_*` returns a ticket once the write is queued (it waits only for room
  in that network's queue: backpressure, never loss); `wait_committed` returns once the
  transaction holding it committed. The `async def` write methods without `submit_` do
  both. A QoS 0 report may be submitted and never waited for.
- UUIDs: devices, values and states get uuid4 when first declared and keep it forever (unique
  on parent + name); declaring again updates metadata in place.
- A report row whose timestamp differs from its receive time (the device stamped it) is
  stored once per (value, timestamp, data): QoS 1 resends do not duplicate it.
- Reads see only committed data and never wait for the writer.
- `erase_network` leaves no row of that network anywhere but the audit trail's entries
  (identifiers only, append-only: the record that it was erased stays).
- Times are UTC-aware datetimes; storage resolution is one microsecond.
- Failures raise `gateway.storage.StorageError` (never acknowledge what raised it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from gateway.model.declarations import ModelDecl
from gateway.model.limits import Limits
from gateway.model.tree import DeviceNode, NetworkTree, ReportRow, StateKind

from .audit import AuditEntry, AuditRecord
from .records import (
    ConnectionEvent,
    ConnectionStatus,
    QueuedMessage,
    RetainedMessage,
    SessionChange,
    StateRecord,
    StoredSession,
    StoreStatistics,
    ValueLocation,
)


class Store(Protocol):
    # -- writes: the data model ----------------------------------------------------------
    async def declare_model(self, network: UUID, model: ModelDecl, now: datetime,
                            limits: Limits = ...) -> NetworkTree:
        """Create or update the declared nodes; return the network's whole tree.

        Raises `gateway.model.DeclarationRejected` when the network would pass its caps."""

    async def submit_reports(self, rows: Sequence[ReportRow], network: UUID | None = None
                             ) -> Any:
        """Queue report rows (in `network`'s queue); returns a ticket for `wait_committed`."""

    async def wait_committed(self, ticket: Any) -> Any:
        """Return once the ticket's transaction committed; raise StorageError if it failed."""

    async def append_reports(self, rows: Sequence[ReportRow], network: UUID | None = None
                             ) -> None: ...

    async def stored_bytes(self, network: UUID) -> int:
        """Bytes the network's readings and commands take (data + a per-row overhead), as
        maintained on every insert and erasure; cheap (no table scan)."""

    async def append_control(self, value: UUID, data: str, now: datetime) -> StateRecord:
        """Store a Control state (the caller validated it)."""

    # -- writes: connections -------------------------------------------------------------
    async def connected(self, network: UUID, client_id: str, cert_serial: str | None,
                        now: datetime) -> None:
        """Record a connect; queued in the network's queue, not waited for (a connect never
        waits for a commit; readers see it once the next commit lands)."""

    async def disconnected(self, network: UUID, client_id: str, reason: str,
                           now: datetime) -> None:
        """Record a disconnect; queued like `connected`, after it."""

    async def seen(self, network: UUID, now: datetime) -> None:
        """Update last-seen; queued, not waited for."""

    # -- writes: MQTT state that must survive a restart ----------------------------------
    async def set_retained(self, network: UUID, topic: str, payload: bytes, qos: int,
                           now: datetime) -> None:
        """Set (or with an empty payload, clear) a retained message of the jail."""

    async def save_session(self, network: UUID, client_id: str,
                           subscriptions: Sequence[tuple[str, int]], now: datetime) -> None:
        """Create a persistent session or replace its subscriptions."""

    async def delete_session(self, network: UUID, client_id: str) -> None: ...

    async def enqueue(self, network: UUID, client_id: str,
                      messages: Sequence[tuple[str, bytes, int, bool]], now: datetime
                      ) -> list[int]:
        """Queue QoS 1/2 messages for an offline session; returns their ids."""

    async def dequeue(self, network: UUID, client_id: str, ids: Sequence[int]) -> None:
        """Forget queued messages once delivered (PUBACK / PUBCOMP received)."""

    async def submit_session_changes(self, changes: Sequence[SessionChange], now: datetime
                                     ) -> Any:
        """Queue MQTT state changes as ONE operation, applied in order in one transaction.

        Returns a ticket; `wait_committed(ticket)` gives the ids of the `Enqueued` changes
        and of each copy of the `EnqueuedMany` ones, in order. A message queued for many
        sessions is stored once; it goes with its last reference. A clear, delete or
        dequeue for a network the store does not hold (erased) is a no-op;
        it never creates the network."""

    async def erase_network(self, network: UUID, audit: AuditRecord | None = None) -> bool:
        """Erase `network`; `audit` goes to the audit trail in the same transaction."""

    async def drop_reports_before(self, cutoff: datetime) -> int:
        """Retention: remove readings and commands stamped before `cutoff` (PostgreSQL: by
        whole week partitions, so those of the cutoff's own week stay until it is wholly
        past), keeping stored bytes right; return how many rows went."""

    async def append_audit(self, record: AuditRecord, network: UUID | None = None) -> int:
        """Append to the audit trail (gateway/storage/audit.py); the last seq once committed."""

    async def audit_entries(self, *, since: datetime | None = ..., after: int = ...,
                            limit: int = ...) -> list[AuditEntry]: ...

    async def audit_newest(self, *, before: int | None = ..., limit: int = ...
                           ) -> list[AuditEntry]: ...

    # -- reads ---------------------------------------------------------------------------
    async def get_tree(self, network: UUID) -> NetworkTree | None: ...

    async def find_value(self, value: UUID) -> ValueLocation | None: ...

    async def find_device(self, device: UUID) -> tuple[UUID, DeviceNode] | None:
        """(network UUID, the device node with its values), or None."""

    async def history(self, value: UUID, *, kind: StateKind = ..., since: datetime | None = ...,
                      until: datetime | None = ..., limit: int = ..., newest_first: bool = ...,
                      after: StateRecord | None = ...) -> list[StateRecord]: ...

    async def latest_states(self, network: UUID) -> dict[UUID, StateRecord]: ...

    async def connection_status(self, network: UUID) -> ConnectionStatus | None: ...

    async def list_networks(self, *, limit: int = ..., after: UUID | None = ...
                            ) -> list[ConnectionStatus]: ...

    async def connection_history(self, network: UUID, *, limit: int = ...
                                 ) -> list[ConnectionEvent]: ...

    async def retained(self, network: UUID) -> list[RetainedMessage]: ...

    async def load_sessions(self, network: UUID | None = ..., *, queued: bool = ...
                            ) -> list[StoredSession]:
        """Persistent sessions with their queue counts; `queued=False` reads no payloads."""

    async def load_queued(self, network: UUID, client_id: str, upto: int
                          ) -> list[QueuedMessage]:
        """One session's queued messages with ids up to `upto`, oldest first."""

    def statistics(self) -> StoreStatistics: ...
