"""The broker's MQTT state in the store: nothing the gateway acknowledged is lost on restart.

Theory of operation. The broker stays synchronous and in memory (`MemorySessionStore`,
`MemoryRetainedStore`); the durable stores here subclass them and, on each change that must
survive a restart, append one `SessionChange` to a shared `Journal`:

- a retained message set or cleared (MQTT 3.1.1 section 3.3.1.3), by a device, a will or an
  HTTP control command;
- a persistent (clean_session=0) session created, its subscriptions changed, or deleted;
- a QoS 1/2 message queued for an OFFLINE persistent session (MQTT-3.1.2-5), and its removal
  once the session acknowledged it (PUBACK / PUBCOMP).

Messages to live sessions and QoS 0 messages never reach the journal: the hot path adds no
store write. One flusher task (`Journal.run`) takes everything journaled so far and submits
it as ONE store operation (`Store.submit_session_changes`), so it rides the writer's group
commit with the reports; while that commits, new changes pile up for the next one.

The journal counts changes (`mark()`); `wait_durable(mark)` returns once every change up to
that mark is committed. A connection takes the mark after routing one socket read and its
PUBACK/PUBREC wait for it (only when the read changed the journal), so "acknowledged" means
"in the store" for a retained message and for a copy queued to an offline session.

The copies of one publish queued for offline sessions are ONE `EnqueuedMany` change: the
store keeps the message once and one small reference per session. Queued copies carry a
`QueueRef` (`Message.ref`): the reference's id arrives with the commit; a copy delivered
before that is dequeued as soon as the id is known.

At start, `load_broker_state` rebuilds the sessions (subscriptions, and only the COUNT and
bytes of their queues) and the retained messages from the store. A session's queued
messages are read when its client reconnects (`DurableSessionStore.restore`, before the
CONNACK), so start-up time and memory do not grow with the queues. Topics in the store are
device-relative (inside the jail); the broker's are mounted (`<network-uuid>/...`).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import trio

from .broker import Broker
from .broker_state import (
    MemoryRetainedStore,
    MemorySessionStore,
    Message,
    SessionKey,
    SessionState,
)
from .delivery import Grant, props_from_wire, props_to_wire
from .jail import Jail
from .mqtt.packets import QoS
from .storage.errors import StorageError, StoreClosed
from .storage.records import (
    Dequeued,
    Enqueued,
    EnqueuedMany,
    RetainedChange,
    SessionChange,
    SessionDeleted,
    SessionSaved,
)

__all__ = [
    "DurableRetainedStore", "DurableSessionStore", "Journal", "QueueRef", "load_broker_state",
    "state_from_stored",
]


def _split(mounted: str) -> tuple[UUID, str]:
    network, _, relative = mounted.partition("/")
    return UUID(network), relative


def _when(at: float | None) -> datetime | None:
    return None if at is None else datetime.fromtimestamp(at, UTC)


def _epoch(at: datetime | None) -> float | None:
    return None if at is None else at.timestamp()


def _v5(message: Message) -> dict[str, Any]:
    """The MQTT 5 fields of a store record for `message` (wire properties, expiry)."""
    if message.props is None and message.expires_at is None:
        return {}
    return {"properties": props_to_wire(message.props, Jail(message.network)),
            "expires_at": _when(message.expires_at)}


def _from_store(jail: Jail, properties: bytes, expires_at: datetime | None) -> dict[str, Any]:
    """`Message` keywords for a stored record's MQTT 5 fields."""
    if not properties and expires_at is None:
        return {}
    return {"props": props_from_wire(properties, jail), "expires_at": _epoch(expires_at)}


class QueueRef:
    """The store's handle on one queued copy: its row id once committed."""

    __slots__ = ("id", "delivered")

    def __init__(self, id: int | None = None) -> None:
        self.id = id
        self.delivered = False


class Journal:
    """Ordered MQTT state changes on their way into the store (one flusher task)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._pending: list[tuple[SessionChange, tuple[QueueRef | None, ...]]] = []
        self._seq = 0  # changes journaled, ever
        self._committed = 0  # changes committed (or failed), in order
        self._failed: list[tuple[int, int]] = []  # (after, upto] ranges whose commit failed
        self._wake = trio.Event()
        self._progress = trio.Event()
        self.commits = 0
        self.changes = 0
        self.failures = 0

    def add(self, change: SessionChange, *refs: QueueRef | None) -> None:
        """Journal `change`; an enqueue passes one ref per copy (its id comes back)."""
        self._pending.append((change, refs))
        self._seq += 1
        self._wake.set()

    def mark(self) -> int:
        """The position after the last change journaled so far."""
        return self._seq

    async def wait_durable(self, mark: int) -> None:
        """Return once the changes up to `mark` are committed.

        Raises:
            StorageError: the commit holding change `mark` failed (do not acknowledge).
        """
        while self._committed < mark:
            await self._progress.wait()
        for after, upto in self._failed:
            if after < mark <= upto:
                raise StorageError("the MQTT state change was not stored")

    async def settle(self) -> None:
        """Return once everything journaled so far is committed (or failed)."""
        while self._committed < self._seq:
            await self._progress.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """The flusher: runs until cancelled."""
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await self.flush()

    async def flush(self) -> None:
        """Submit everything journaled as one operation and wait for its commit.

        Shielded: a batch taken from the journal is never abandoned half-way (the writer
        itself always makes progress, so this is bounded)."""
        with trio.CancelScope(shield=True):
            await self._flush()

    async def _flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        upto = self._seq
        after = upto - len(batch)
        try:
            ticket = await self.store.submit_session_changes(
                [change for change, _ in batch], datetime.now(UTC))
            ids = await self.store.wait_committed(ticket)
        except (StorageError, StoreClosed):
            self.failures += 1
            self._failed.append((after, upto))
            del self._failed[:-64]  # only recent acknowledgements can still be waiting
        else:
            self.commits += 1
            self.changes += len(batch)
            copies = ((change.network, client, ref) for change, refs in batch
                      for client, ref in zip(_clients(change), refs, strict=True))
            for (network, client, ref), row_id in zip(copies, ids, strict=True):
                if ref is None:
                    continue
                ref.id = row_id
                if ref.delivered:  # delivered while its enqueue was committing
                    self.add(Dequeued(network, client, row_id))
        self._committed = upto
        event, self._progress = self._progress, trio.Event()
        event.set()

    def statistics(self) -> dict[str, int]:
        return {"pending": len(self._pending), "commits": self.commits,
                "changes": self.changes, "failures": self.failures}


def _clients(change: SessionChange) -> tuple[str, ...]:
    """The sessions an enqueue change holds copies for (in id order); none for others."""
    if isinstance(change, Enqueued):
        return (change.client_id,)
    if isinstance(change, EnqueuedMany):
        return tuple(client for client, _ in change.copies)
    return ()


class DurableSessionStore(MemorySessionStore):
    """Sessions in memory; persistent ones, their subscriptions and offline queues journaled."""

    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self.journal = journal
        self._saved: dict[SessionKey, tuple[tuple[tuple[str, int], ...], int | None]] = {}

    def load(self, state: SessionState) -> None:
        """Add a session read from the store (nothing journaled)."""
        super().put(state)
        self._saved[state.key] = (_subscriptions(state), state.expiry)

    def unload(self, key: SessionKey) -> None:
        """Forget a session in memory only: its rows stay (another node owns it now)."""
        super().delete(key)
        self._saved.pop(key, None)

    def put(self, state: SessionState) -> None:
        super().put(state)
        if state.clean:
            return
        saved = (_subscriptions(state), state.expiry)
        if self._saved.get(state.key) != saved:  # only when they changed: a write each
            self._saved[state.key] = saved
            self.journal.add(SessionSaved(UUID(state.key[0]), state.key[1], saved[0],
                                          state.expiry))

    def delete(self, key: SessionKey) -> None:
        super().delete(key)
        if self._saved.pop(key, None) is not None:  # its queued rows go with it
            self.journal.add(SessionDeleted(UUID(key[0]), key[1]))

    def keep(self, state: SessionState, message: Message) -> Message:
        if state.clean or message.qos == QoS.AT_MOST_ONCE:
            return message
        network, topic = _split(message.topic)
        ref = QueueRef()
        self.journal.add(Enqueued(network, state.key[1], topic, message.payload,
                                  int(message.qos), message.retain, **_v5(message)), ref)
        return dataclasses.replace(message, ref=ref)

    def keep_many(self, copies: list[tuple[SessionState, Message]]) -> list[Message]:
        out = [m for _, m in copies]
        durable = [i for i, (state, m) in enumerate(copies)
                   if not state.clean and m.qos != QoS.AT_MOST_ONCE]
        if not durable:
            return out
        first = copies[durable[0]][1]
        network, topic = _split(first.topic)
        refs = [QueueRef() for _ in durable]
        self.journal.add(EnqueuedMany(
            network, topic, first.payload, first.retain,
            tuple((copies[i][0].key[1], int(copies[i][1].qos)) for i in durable),
            **_v5(first)), *refs)
        for i, ref in zip(durable, refs, strict=True):
            out[i] = dataclasses.replace(out[i], ref=ref)
        return out

    async def restore(self, state: SessionState) -> None:
        """Read the queue still only in the store (ids up to `stored_upto`) in front of the
        outbox: those messages are older than anything queued since the restart.

        Raises:
            StorageError: the store cannot be read (the state is left as it was).
        """
        if not state.stored:
            return
        upto, count = state.stored_upto, state.stored
        state.stored = state.stored_upto = 0  # a racing reconnect must not read them twice
        net = state.key[0]
        try:
            rows = await self.journal.store.load_queued(UUID(net), state.key[1], upto)
        except BaseException:
            state.stored, state.stored_upto = count, upto
            raise
        jail = Jail(net)
        state.requeue(Message(jail.mount_topic(m.topic), m.payload, QoS(m.qos), m.retain,
                              ref=QueueRef(m.id), **_from_store(jail, m.properties,
                                                                m.expires_at))
                      for m in rows)

    def delivered(self, state: SessionState, message: Message) -> None:
        ref = message.ref
        if not isinstance(ref, QueueRef) or ref.delivered:
            return
        ref.delivered = True
        if ref.id is not None and state.key in self._saved:
            self.journal.add(Dequeued(UUID(state.key[0]), state.key[1], ref.id))


def _subscriptions(state: SessionState) -> tuple[tuple[str, int], ...]:
    """(device filter, grant code) per subscription: the QoS, or the MQTT 5 grant."""
    jail = Jail(state.key[0])
    options = state.options
    return tuple(sorted(
        (jail.unmount_filter(f), options[f].code if f in options else int(q))
        for f, q in state.subscriptions.items()))


class DurableRetainedStore(MemoryRetainedStore):
    """Retained messages in the memory topic tree (reads stay cheap, matching walks only
    what a filter reaches), every set and clear journaled. At start `load` rebuilds the tree
    from the store without journaling; what the store holds was within the caps when kept."""

    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self.journal = journal

    def load(self, message: Message) -> None:
        super().set(message)

    def set(self, message: Message) -> None:
        super().set(message)
        network, topic = _split(message.topic)
        self.journal.add(RetainedChange(network, topic, message.payload, int(message.qos),
                                        **_v5(message)))

    def clear(self, topic: str) -> None:
        if not self.has(topic):
            return  # nothing stored either: no write for an empty retained publish
        super().clear(topic)
        network, relative = _split(topic)
        self.journal.add(RetainedChange(network, relative, b"", 0))


def state_from_stored(stored: Any, max_queued: int) -> SessionState:
    """The broker's `SessionState` of a stored persistent session (`StoredSession`): its
    subscriptions with their grants, its expiry, its queue's count and bytes (the messages
    stay in the store until `DurableSessionStore.restore`)."""
    net = str(stored.network)
    state = SessionState((net, stored.client_id), False, max_queued,
                         expiry=stored.expiry_interval)
    jail = Jail(net)
    for f, code in stored.subscriptions:
        mounted, grant = jail.mount_filter(f, shared=True), Grant.from_code(code)
        state.subscriptions[mounted] = grant.qos
        if not grant.plain:
            state.options[mounted] = grant
    state.stored, state.stored_upto = stored.queued_count, stored.queued_upto
    state.queued_bytes = stored.queued_bytes
    return state


async def load_broker_state(store: Any, *, max_queued: int = 1000,
                            max_sessions_per_network: int = 1000,
                            max_retained_per_network: int = 10_000,
                            owned: Any = None, **limits: Any) -> tuple[Broker, Journal]:
    """A broker holding the store's persistent sessions and retained messages, and the
    journal that keeps them in the store from now on (run `journal.run` beside it).
    `limits`: the Broker's other keyword arguments (e.g. max_retained_bytes_per_network,
    a cluster's `peer`). `owned(network, client_id)`: in a cluster, whether this node owns
    a stored session (it loads only those; None: all).

    Raises:
        StorageError: the store cannot be read.
    """
    journal = Journal(store)
    sessions = DurableSessionStore(journal)
    retained = DurableRetainedStore(journal)
    networks: set[UUID] = set()
    for stored in await store.load_sessions(queued=False):
        if owned is not None and not owned(stored.network, stored.client_id):
            continue
        networks.add(stored.network)
        sessions.load(state_from_stored(stored, max_queued))
    after: UUID | None = None
    while True:
        page = await store.list_networks(limit=500, after=after)
        networks.update(status.network for status in page)
        if len(page) < 500:
            break
        after = page[-1].network
    for network in sorted(networks, key=str):
        jail = Jail(str(network))
        for kept in await store.retained(network):
            retained.load(Message(jail.mount_topic(kept.topic), kept.payload, QoS(kept.qos),
                                  True, **_from_store(jail, kept.properties, kept.expires_at)))
    broker = Broker(max_queued=max_queued, max_sessions_per_network=max_sessions_per_network,
                    max_retained_per_network=max_retained_per_network, sessions=sessions,
                    retained=retained, **limits)
    return broker, journal

