"""The broker's values and its state stores: a message, a session's state, the outlet a live
connection gives it, and the in-memory session and retained stores (`gateway.persistence`
has the durable ones). `gateway.broker` routes between them."""

from __future__ import annotations

import dataclasses
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from .delivery import Grant
from .mqtt.packets import QoS
from .mqtt.properties import Properties
from .mqtt.session import ProtocolSessionState
from .reasons import DisconnectReason
from .retained import RetainedTree

SessionKey = tuple[str, str]
"""(network UUID, client id)."""


@dataclass(frozen=True, slots=True)
class Message:
    """An application message as the broker routes it (topic mounted)."""

    topic: str
    payload: bytes
    qos: QoS = QoS.AT_MOST_ONCE
    retain: bool = False
    ref: object = field(default=None, compare=False, repr=False)
    """The durable store's handle on a queued copy (`gateway.persistence`), else None."""
    props: Properties | None = None
    """MQTT 5 properties passed through to MQTT 5 subscribers (`gateway.delivery`)."""
    expires_at: float | None = None
    """MQTT 5 message expiry (wall clock, epoch seconds): never delivered after it."""
    origin: SessionKey | None = field(default=None, compare=False, repr=False)
    """The publishing session (MQTT 5 no local), None for the gateway's own messages."""
    sub_ids: tuple[int, ...] = ()
    """A copy's subscription identifiers (MQTT-3.3.4-3)."""

    @property
    def network(self) -> str:
        return self.topic.partition("/")[0]

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


class Outlet(Protocol):
    """A live connection as the broker sees it."""

    def wake(self) -> None:
        """The session's outbox has new messages."""

    def close(self, reason: DisconnectReason, detail: str | None = None) -> None:
        """Close the connection (from any task; must not block)."""


@dataclass(eq=False, slots=True)
class SessionState:
    """What MQTT keeps for a session: subscriptions and undelivered messages (section 3.1.2.4)."""

    key: SessionKey
    clean: bool
    max_queued: int
    subscriptions: dict[str, QoS] = field(default_factory=dict)
    outbox: deque[Message] = field(default_factory=deque)
    dropped: int = 0
    protocol_state: ProtocolSessionState | None = None
    """The protocol core's unfinished flows (inflight QoS 1/2), kept while offline."""
    inflight: dict[int, Message] = field(default_factory=dict)
    """The messages of those flows by packet id, kept with them (their store refs)."""
    stored: int = 0
    """Queued messages still only in the store (read when the client reconnects)."""
    stored_upto: int = 0
    """The highest store id among those."""
    queued_bytes: int = 0
    """Payload bytes of this session's kept copies (in memory or only stored)."""
    options: dict[str, Grant] = field(default_factory=dict)
    """MQTT 5: the grants of `subscriptions` that carry more than a QoS (sparse)."""
    expiry: int | None = None
    """MQTT 5 session expiry interval in seconds after a disconnect; None: never (the 3.1.1
    clean_session=0 rule). A session with expiry 0 is `clean`."""

    def offer(self, message: Message) -> bool:
        """Queue a message for delivery; False when the outbox is full (it is not queued)."""
        if len(self.outbox) + self.stored >= self.max_queued:
            self.dropped += 1
            return False
        self.outbox.append(message)
        return True

    def requeue(self, messages: Iterable[Message]) -> None:
        """Put unacknowledged messages back at the front, in their original order."""
        self.outbox.extendleft(reversed(list(messages)))


class SessionStore(Protocol):
    """Where persistent sessions live between connections (a durable store implements it)."""

    def get(self, key: SessionKey) -> SessionState | None: ...

    def put(self, state: SessionState) -> None: ...

    def delete(self, key: SessionKey) -> None: ...

    def all(self) -> Iterable[SessionState]: ...

    def count(self, network: str) -> int: ...

    def keep(self, state: SessionState, message: Message) -> Message:
        """`message` is queued for the offline session `state`: make it durable (lazily)."""
        ...

    def keep_many(self, copies: list[tuple[SessionState, Message]]) -> list[Message]:
        """Copies of ONE routed message queued for offline sessions: keep them as one."""
        ...

    async def restore(self, state: SessionState) -> None:
        """Read the queued messages of `state` still only in the store into its outbox."""
        ...

    def delivered(self, state: SessionState, message: Message) -> None:
        """The session acknowledged `message` (PUBACK or PUBCOMP): forget a durable copy."""
        ...


class MemorySessionStore:
    """Sessions in a dict: lost on restart (the durable store comes with the ingest issue)."""

    def __init__(self) -> None:
        self._sessions: dict[SessionKey, SessionState] = {}
        self._per_network: Counter[str] = Counter()

    def get(self, key: SessionKey) -> SessionState | None:
        return self._sessions.get(key)

    def load(self, state: SessionState) -> None:
        """Add a session that already lives in the store (nothing written)."""
        MemorySessionStore.put(self, state)

    def unload(self, key: SessionKey) -> None:
        """Forget a session in memory only (another node owns it now)."""
        MemorySessionStore.delete(self, key)

    def put(self, state: SessionState) -> None:
        if state.key not in self._sessions:
            self._per_network[state.key[0]] += 1
        self._sessions[state.key] = state

    def delete(self, key: SessionKey) -> None:
        if self._sessions.pop(key, None) is not None:
            self._per_network[key[0]] -= 1
            if self._per_network[key[0]] <= 0:
                del self._per_network[key[0]]

    def count(self, network: str) -> int:
        return self._per_network.get(network, 0)

    def all(self) -> Iterable[SessionState]:
        return list(self._sessions.values())

    def keep(self, state: SessionState, message: Message) -> Message:
        return dataclasses.replace(message, ref=KEPT)

    def keep_many(self, copies: list[tuple[SessionState, Message]]) -> list[Message]:
        return [dataclasses.replace(m, ref=KEPT) for _, m in copies]

    async def restore(self, state: SessionState) -> None:
        pass

    def delivered(self, state: SessionState, message: Message) -> None:
        pass


KEPT = object()
"""`Message.ref` of a copy kept by the in-memory store (counted in the byte limits)."""


class MemoryRetainedStore(RetainedTree[Message]):
    """Retained messages by mounted topic, in a per-jail topic tree (`gateway.retained`)."""

    def mirror(self, topic: str, kept: Message | None) -> None:
        """Set (or with None clear) in memory only: another node stored the change."""
        if kept is None:
            RetainedTree.clear(self, topic)
        else:
            RetainedTree.set(self, kept)
