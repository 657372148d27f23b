"""The broker core: sessions, subscriptions, retained messages and routing, without I/O.

Theory of operation. Every topic and filter reaching this module is already mounted by the
jail (`<network-uuid>/...`), so one `SubscriptionTree` serves all networks and isolation
follows from the prefixes: a mounted filter can only match topics under its own network.

- A session is keyed by (network, client id) (MQTT 3.1.1 section 3.1.3; ids are free inside
  a jail). `connect()` takes over a live session of the same key: the old connection is
  closed with DUPLICATE_CLIENTID (MQTT-3.1.4-2). clean_session=1 discards any previous state
  (MQTT-3.1.2-6); clean_session=0 resumes it and reports session_present (MQTT-3.2.2-2).
- Each session has one bounded outbox. `publish()` matches the topic once and appends one
  copy per session at min(message QoS, the highest QoS granted by any overlapping
  subscription of that session) (MQTT-3.3.5-1), with retain cleared (MQTT-3.3.1-9). A live
  connection drains the outbox into its protocol session as its inflight window allows; an
  offline persistent session keeps QoS 1/2 messages (MQTT-3.1.2-5) up to `max_queued`.
- Retained messages: one per topic, replaced by each retained PUBLISH and cleared by an empty
  one (MQTT-3.3.1-5, -10, -11), held in a per-jail topic tree (`gateway.retained`) and
  capped per network by count and by bytes. A new subscription receives the matching ones
  with retain set (MQTT-3.3.1-6) from `retained_for`, a lazy iterator the connection pulls
  only as fast as it can send: a SUBSCRIBE costs what it delivers, never a copied list.
- Persistent state sits behind `SessionStore` and `RetainedStore`; the in-memory ones are the
  default, `gateway.persistence` has the durable ones. The copies of one publish queued for
  OFFLINE sessions go to the store in ONE `SessionStore.keep_many` call (a durable store
  stores the message once and tags each copy with a `ref`); a copy kept at disconnect goes
  through `keep`; `delivered` is called when its PUBACK/PUBCOMP arrives; messages to live
  sessions and QoS 0 never touch the store (the hot path stays in memory).
- Kept copies (those with a `ref`) count against `max_queued_bytes_per_session` and
  `max_queued_bytes_per_network` (payload bytes per copy) until acknowledged or their session
  ends; past a limit the copy is not queued for that session (`drop_reasons`), the publisher
  is not told. A durable session's queue may still be in the store (`stored`, counted in
  the limits) until its client reconnects and `SessionStore.restore` reads it.
- In a cluster (`gateway.cluster`) each node's broker holds the sessions that node owns.
  `peer.relay` hears of every publish (after local routing) and `peer.interest` of each
  network gaining its first or losing its last subscription here; messages from other nodes
  come in through `publish_relayed` (routed here, never relayed again); `adopt`/`release`
  move a persistent session in and out of memory without touching the store.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from .mqtt.packets import QoS
from .mqtt.session import ProtocolSessionState
from .mqtt.topics import SubscriptionTree
from .reasons import DisconnectReason
from .retained import RetainedTree, retained_size

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

    @property
    def network(self) -> str:
        return self.topic.partition("/")[0]


class BrokerPeer(Protocol):
    """The other nodes of a cluster, as the broker sees them (`gateway.cluster`)."""

    def relay(self, message: Message, kept: Message | None) -> None:
        """`message` was routed here; `kept`: for a retained one, what its topic retains now
        (None: nothing, cleared or refused)."""

    def interest(self, network: str, present: bool) -> None:
        """The network's first subscription here appeared (True) or its last went (False)."""

    def ended(self, key: SessionKey, persistent: bool) -> None:
        """The live connection of session `key` detached here (not taken over here)."""


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


class RetainedStore(Protocol):
    """Where retained messages live (`gateway.retained.RetainedTree` in memory; a durable
    store in `gateway.persistence` journals each change)."""

    def set(self, message: Message) -> None: ...

    def clear(self, topic: str) -> None: ...

    def matching(self, mounted_filter: str) -> Iterator[Message]:
        """Lazily, the retained messages `mounted_filter` matches (cost: what it reaches)."""
        ...

    def get(self, topic: str) -> Message | None: ...

    def count(self, network: str) -> int: ...

    def bytes(self, network: str) -> int: ...

    def has(self, topic: str) -> bool: ...


class MemoryRetainedStore(RetainedTree[Message]):
    """Retained messages by mounted topic, in a per-jail topic tree (`gateway.retained`)."""

    def mirror(self, topic: str, kept: Message | None) -> None:
        """Set (or with None clear) in memory only: another node stored the change."""
        if kept is None:
            RetainedTree.clear(self, topic)
        else:
            RetainedTree.set(self, kept)


@dataclass(frozen=True, slots=True)
class Attached:
    """What `Broker.connect` hands the new connection."""

    state: SessionState
    session_present: bool
    replaced: Outlet | None = None
    """The live connection this one took over (already told to close), if any."""


class Broker:
    """Routes mounted messages between sessions of all networks."""

    def __init__(
        self,
        *,
        max_queued: int = 1000,
        max_sessions_per_network: int = 1000,
        max_retained_per_network: int = 10_000,
        max_retained_bytes_per_network: int = 64 * 1024 * 1024,
        max_subscriptions_per_session: int = 256,
        max_queued_bytes_per_session: int = 8 * 1024 * 1024,
        max_queued_bytes_per_network: int = 64 * 1024 * 1024,
        sessions: SessionStore | None = None,
        retained: RetainedStore | None = None,
        peer: BrokerPeer | None = None,
    ) -> None:
        self.max_queued = max_queued
        self.max_sessions_per_network = max_sessions_per_network
        self.max_retained_per_network = max_retained_per_network
        self.max_retained_bytes_per_network = max_retained_bytes_per_network
        self.max_subscriptions_per_session = max_subscriptions_per_session
        self.max_queued_bytes_per_session = max_queued_bytes_per_session
        self.max_queued_bytes_per_network = max_queued_bytes_per_network
        self.drop_reasons: Counter[str] = Counter()
        self._queued_bytes: Counter[str] = Counter()  # kept copies' bytes per network
        self.retained_refused = 0  # over max_retained_per_network
        self.retained_refused_bytes = 0  # over max_retained_bytes_per_network
        self.subscriptions_refused = 0  # over max_subscriptions_per_session
        self.sessions: SessionStore = sessions if sessions is not None else MemorySessionStore()
        self.retained: RetainedStore = (
            retained if retained is not None else MemoryRetainedStore()
        )
        self._tree = SubscriptionTree()
        self.peer = peer
        self._filters: Counter[str] = Counter()  # subscriptions per network (peer.interest)
        self._live: dict[SessionKey, Outlet] = {}
        self.routed = 0
        self.delivered = 0
        self.dropped = 0
        for state in self.sessions.all():
            self._index(state)

    def _index(self, state: SessionState) -> None:
        for topic_filter, qos in state.subscriptions.items():
            self._tree.add(topic_filter, state.key, qos)
        self._queued_bytes[state.key[0]] += state.queued_bytes
        self._count_filters(state.key[0], len(state.subscriptions))

    def _count_filters(self, network: str, delta: int) -> None:
        if not delta:
            return
        before = self._filters[network]
        after = before + delta
        if after > 0:
            self._filters[network] = after
        else:
            del self._filters[network]
        if self.peer is not None and (before == 0) != (after <= 0):
            self.peer.interest(network, after > 0)

    def adopt(self, state: SessionState) -> None:
        """Hold `state`, a persistent session read from the store (a takeover from another
        node): indexed, nothing written."""
        self.release(state.key)
        self.sessions.load(state)
        self._index(state)

    def release(self, key: SessionKey) -> SessionState | None:
        """Forget the offline session `key` in memory only (another node owns it now);
        returns it, or None when it was live or unknown."""
        state = self.sessions.get(key)
        if state is None or key in self._live:
            return None
        for topic_filter in state.subscriptions:
            self._tree.remove(topic_filter, key)
        self._count_filters(key[0], -len(state.subscriptions))
        self._charge(state, -state.queued_bytes)
        self.sessions.unload(key)
        return state

    # -- sessions -----------------------------------------------------------------------

    def connect(self, key: SessionKey, clean_session: bool, outlet: Outlet) -> Attached | None:
        """Attach a new connection to the session `key`, taking over any live one.

        Returns None, changing nothing, when the network already holds
        `max_sessions_per_network` sessions and `key` is not one of them.
        """
        if (
            self.sessions.get(key) is None
            and self.sessions.count(key[0]) >= self.max_sessions_per_network
        ):
            return None
        old = self._live.pop(key, None)
        if old is not None and old is not outlet:
            old.close(DisconnectReason.DUPLICATE_CLIENTID, "another connection took over")
        state = self.sessions.get(key)
        present = False
        if state is not None and (clean_session or state.clean):
            self._drop_state(state)
            state = None
        if state is None:
            state = SessionState(key, clean_session, self.max_queued)
            self.sessions.put(state)
        else:
            present = True
        self._live[key] = outlet
        return Attached(state, present, old if old is not outlet else None)

    def disconnect(self, key: SessionKey, outlet: Outlet) -> None:
        """Detach `outlet`; a clean session ends here (MQTT-3.1.2-6), a persistent one stays."""
        if self._live.get(key) is not outlet:
            return  # taken over: the session now belongs to the newer connection
        del self._live[key]
        state = self.sessions.get(key)
        if self.peer is not None:
            self.peer.ended(key, state is not None and not state.clean)
        if state is not None:
            if state.clean:
                self._drop_state(state)
            else:
                # Sent but unacknowledged (the connection saved them in `inflight`) come
                # first: a durable store keeps them for a restart too.
                for packet_id, message in list(state.inflight.items()):
                    if message.ref is None and message.qos > QoS.AT_MOST_ONCE:
                        state.inflight[packet_id] = self._keep(state, message)
                # An offline session keeps only what MQTT-3.1.2-5 requires: QoS 1 and 2.
                kept = [m if m.ref is not None else self._keep(state, m)
                        for m in state.outbox if m.qos > QoS.AT_MOST_ONCE]
                state.outbox.clear()
                state.outbox.extend(kept)
                self.sessions.put(state)

    def acknowledged(self, state: SessionState, message: Message) -> None:
        """`state`'s connection got the PUBACK/PUBCOMP for `message`."""
        if message.ref is not None:
            self.sessions.delivered(state, message)
            self._charge(state, -len(message.payload))

    def _keep(self, state: SessionState, message: Message) -> Message:
        kept = self.sessions.keep(state, message)
        if kept.ref is not None:
            self._charge(state, len(kept.payload))
        return kept

    def _charge(self, state: SessionState, size: int) -> None:
        state.queued_bytes = max(0, state.queued_bytes + size)
        network = state.key[0]
        self._queued_bytes[network] += size
        if self._queued_bytes[network] <= 0:
            del self._queued_bytes[network]

    def queued_bytes(self, network: str) -> int:
        """Payload bytes of the network's kept copies (the per-network limit's measure)."""
        return self._queued_bytes.get(network, 0)

    def is_live(self, key: SessionKey) -> bool:
        return key in self._live

    def live(self) -> dict[SessionKey, Outlet]:
        return dict(self._live)

    def _drop_state(self, state: SessionState) -> None:
        for topic_filter in state.subscriptions:
            self._tree.remove(topic_filter, state.key)
        self._count_filters(state.key[0], -len(state.subscriptions))
        self._charge(state, -state.queued_bytes)
        self.sessions.delete(state.key)

    # -- subscriptions ------------------------------------------------------------------

    def subscribe(self, state: SessionState, mounted_filter: str, qos: QoS) -> bool:
        """Add or replace a subscription (MQTT-3.8.4-3).

        Returns False, changing nothing, when `mounted_filter` is new to the session and the
        session already holds `max_subscriptions_per_session` filters. The retained messages
        to send come from `retained_for`, lazily.
        """
        if (mounted_filter not in state.subscriptions
                and len(state.subscriptions) >= self.max_subscriptions_per_session):
            self.subscriptions_refused += 1
            return False
        if mounted_filter not in state.subscriptions:
            self._count_filters(state.key[0], 1)
        state.subscriptions[mounted_filter] = qos
        self._tree.add(mounted_filter, state.key, qos)
        self.sessions.put(state)
        return True

    def retained_for(self, mounted_filter: str, qos: QoS) -> Iterator[Message]:
        """Lazily, the retained messages a new subscription gets (MQTT-3.3.1-6), retain set,
        each at min(its QoS, the granted `qos`): the caller pulls them as it can send them."""
        for m in self.retained.matching(mounted_filter):
            yield Message(m.topic, m.payload, QoS(min(m.qos, qos)), True)

    def unsubscribe(self, state: SessionState, mounted_filter: str) -> None:
        if state.subscriptions.pop(mounted_filter, None) is not None:
            self._tree.remove(mounted_filter, state.key)
            self._count_filters(state.key[0], -1)
            self.sessions.put(state)

    # -- routing ------------------------------------------------------------------------

    def publish(self, message: Message) -> int:
        """Route one message to every matching session; return how many sessions got it."""
        self.routed += 1
        if message.retain:
            if not message.payload:
                self.retained.clear(message.topic)
            else:
                self._retain(message)
        count = self._route(message)
        if self.peer is not None:
            self.peer.relay(message, self.retained.get(message.topic) if message.retain
                            else None)
        return count

    def publish_relayed(self, message: Message, kept: Message | None) -> int:
        """Route a message another node relayed (`BrokerPeer.relay`), never relaying it
        again; a retained one mirrors that node's retained state (`kept`) in memory."""
        self.routed += 1
        if message.retain:
            self.retained.mirror(message.topic, kept)  # type: ignore[attr-defined]
        return self._route(message)

    def _route(self, message: Message) -> int:
        matches = self._tree.match(message.topic)
        count = 0
        size = len(message.payload)
        offline: list[tuple[SessionState, Message]] = []
        for key, granted in matches.items():
            state = self.sessions.get(key)
            if state is None:
                continue
            qos = QoS(min(message.qos, granted))
            outlet = self._live.get(key)
            if outlet is None and qos == QoS.AT_MOST_ONCE:
                continue
            if outlet is None:
                why = self._refuse_offline(state, size)
                if why is not None:
                    self.dropped += 1
                    self.drop_reasons[why] += 1
                    continue
            if state.offer(Message(message.topic, message.payload, qos, False)):
                count += 1
                if outlet is not None:
                    outlet.wake()
                else:  # offline: the one case a durable store must hold it
                    self._charge(state, size)  # now: later copies see this one's bytes
                    offline.append((state, state.outbox[-1]))
            else:
                self.dropped += 1
                self.drop_reasons["max_queued"] += 1
                if outlet is not None:
                    outlet.close(DisconnectReason.THROTTLED, "max_queued reached")
        if offline:
            for (state, _), kept in zip(offline, self.sessions.keep_many(offline), strict=True):
                state.outbox[-1] = kept
                if kept.ref is None:
                    self._charge(state, -size)
        self.delivered += count
        return count

    def _retain(self, message: Message) -> None:
        # Over a cap the message is routed as usual, but not kept: one network cannot fill
        # the gateway's memory (by count, or by bytes with few large payloads).
        network = message.network
        old = self.retained.get(message.topic)
        if old is None and self.retained.count(network) >= self.max_retained_per_network:
            self.retained_refused += 1
            return
        kept = Message(message.topic, message.payload, message.qos, True)
        size = self.retained.bytes(network) + retained_size(kept)
        if old is not None:
            size -= retained_size(old)
        if size > self.max_retained_bytes_per_network:
            self.retained_refused_bytes += 1
            if old is not None:  # never leave the superseded value as the topic's state
                self.retained.clear(message.topic)
            return
        self.retained.set(kept)

    def _refuse_offline(self, state: SessionState, size: int) -> str | None:
        """Why a copy of `size` bytes cannot be queued for the offline `state`, or None."""
        if state.queued_bytes + size > self.max_queued_bytes_per_session:
            return "max_queued_bytes_per_session"
        if self._queued_bytes.get(state.key[0], 0) + size > self.max_queued_bytes_per_network:
            return "max_queued_bytes_per_network"
        return None

    def statistics(self) -> dict[str, int]:
        return {
            "live_sessions": len(self._live),
            "routed": self.routed,
            "delivered": self.delivered,
            "dropped": self.dropped,
            **{f"dropped_{why}": n for why, n in sorted(self.drop_reasons.items())},
            "retained_refused": self.retained_refused,
            "retained_refused_bytes": self.retained_refused_bytes,
            "subscriptions_refused": self.subscriptions_refused,
        }
