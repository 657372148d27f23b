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
- MQTT 5 (`gateway.delivery`, `gateway.shared`, `gateway.deadlines`): a message past its
  expiry is neither routed nor retained nor sent; a session's subscription options and
  identifiers shape its copy; a shared subscription's group gives each message to one
  member; an offline session with an expiry interval is dropped when it passes, and a
  delayed will is published when its delay (or its session) ends.
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
- In a cluster each node's broker holds the sessions that node owns; its `peer` hears of
  every publish and of the networks it has subscribers in (`gateway.broker_peer`).
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .broker_peer import BrokerPeer, PeerMoves
from .broker_state import (
    MemoryRetainedStore,
    MemorySessionStore,
    Message,
    Outlet,
    SessionKey,
    SessionState,
    SessionStore,
)
from .deadlines import Deadlines
from .delivery import Grant, deliver
from .mqtt.packets import QoS
from .mqtt.topics import SubscriptionTree
from .reasons import DisconnectReason
from .retained import RetainedStore, retained_size
from .shared import GroupKey, SharedGroups, split_shared

EXPIRY, WILL = "expiry", "will"
"""The kinds of the broker's MQTT 5 deadlines."""


@dataclass(frozen=True, slots=True)
class Attached:
    """What `Broker.connect` hands the new connection."""

    state: SessionState
    session_present: bool
    replaced: Outlet | None = None
    """The live connection this one took over (already told to close), if any."""


class Broker(PeerMoves):
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
        retained: RetainedStore[Message] | None = None,
        clock: Callable[[], float] = time.time,
        peer: BrokerPeer | None = None,
    ) -> None:
        """`clock`: the wall clock in epoch seconds (message and session expiry)."""
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
        self.retained: RetainedStore[Message] = (
            retained if retained is not None else MemoryRetainedStore()
        )
        self.clock = clock
        self._tree: SubscriptionTree[SessionKey | GroupKey] = SubscriptionTree()
        self._shared = SharedGroups()
        self.peer = peer
        self._filters: Counter[str] = Counter()  # subscriptions per network (peer.interest)
        self._live: dict[SessionKey, Outlet] = {}
        # MQTT 5 deadlines (wall clock): sessions kept after a disconnect, delayed wills.
        self._deadlines: Deadlines[SessionKey] = Deadlines()
        self._wills: dict[SessionKey, Message] = {}
        self.routed = 0
        self.delivered = 0
        self.dropped = 0
        self.expired = 0  # messages past their MQTT 5 expiry, never delivered
        self.sessions_expired = 0
        now = clock()
        for state in self.sessions.all():
            self._index(state, now)

    def _index(self, state: SessionState, now: float) -> None:
        for topic_filter, qos in state.subscriptions.items():
            self._tree_add(state, topic_filter, state.options.get(topic_filter) or Grant(qos))
        self._queued_bytes[state.key[0]] += state.queued_bytes
        self._count_filters(state.key[0], len(state.subscriptions))
        if state.expiry is not None:  # kept its interval from now (a restart, a takeover)
            self._deadlines.set(EXPIRY, state.key, now + state.expiry)

    # -- sessions -----------------------------------------------------------------------

    def connect(self, key: SessionKey, clean_session: bool, outlet: Outlet, *,
                expiry: int | None = None) -> Attached | None:
        """Attach a new connection to the session `key`, taking over any live one.

        `clean_session`: discard any previous state (3.1.1 clean session, MQTT 5 clean
        start). `expiry`: MQTT 5 session expiry interval (0: the session ends with the
        connection); None: 3.1.1, where `clean_session` also decides persistence. A delayed
        will of `key` is cancelled (MQTT-3.1.3-9 of 5.0: the client came back in time).

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
        self._wills.pop(key, None)
        self._deadlines.cancel(WILL, key)
        self._deadlines.cancel(EXPIRY, key)
        state = self.sessions.get(key)
        present = False
        if state is not None and (clean_session or state.clean):
            self._drop_state(state)
            state = None
        clean = clean_session if expiry is None else expiry == 0
        if state is None:
            state = SessionState(key, clean, self.max_queued, expiry=expiry)
            self.sessions.put(state)
        else:
            present = True
            if (state.clean, state.expiry) != (clean, expiry):
                state.clean, state.expiry = clean, expiry
                self.sessions.put(state)
        self._live[key] = outlet
        return Attached(state, present, old if old is not outlet else None)

    def disconnect(self, key: SessionKey, outlet: Outlet, *,
                   expiry: int | None = None) -> None:
        """Detach `outlet`; a clean session ends here (MQTT-3.1.2-6), a persistent one stays
        (an MQTT 5 one for its expiry interval; `expiry`: the interval its DISCONNECT set)."""
        if self._live.get(key) is not outlet:
            return  # taken over: the session now belongs to the newer connection
        del self._live[key]
        state = self.sessions.get(key)
        if self.peer is not None:
            self.peer.ended(key, state is not None and not state.clean)
        if state is not None:
            if expiry is not None and state.expiry is not None:
                state.expiry = expiry
                state.clean = expiry == 0
            if state.clean:
                self._drop_state(state)
            else:
                if state.expiry is not None:
                    self._deadlines.set(EXPIRY, key, self.clock() + state.expiry)
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
            self._tree_remove(state, topic_filter)
        self._count_filters(state.key[0], -len(state.subscriptions))
        self._charge(state, -state.queued_bytes)
        self._deadlines.cancel(EXPIRY, state.key)
        self.sessions.delete(state.key)

    # -- MQTT 5 deadlines: session expiry, will delay -------------------------------------

    def hold_will(self, key: SessionKey, will: Message, delay: float) -> None:
        """Publish `will` after `delay` seconds unless `key` connects again first
        (MQTT 5 will delay interval) or its session ends first (then at that end)."""
        self._wills[key] = will
        self._deadlines.set(WILL, key, self.clock() + delay)

    def release_wills(self) -> list[Message]:
        """Publish every held will now (the gateway stops: held wills are not stored, and a
        will sent early beats one never sent). Returns them."""
        wills, self._wills = list(self._wills.items()), {}
        for key, will in wills:
            self._deadlines.cancel(WILL, key)
            self.publish(will)
        return [will for _, will in wills]

    def tick(self, now: float | None = None) -> tuple[list[SessionKey], list[Message]]:
        """Run what is due by `now`: drop offline sessions past their expiry (their queue
        goes with them) and publish delayed wills whose time came, a session's will at the
        latest when the session ends. Returns (sessions dropped, wills published). Cost:
        the deadlines due (`gateway.deadlines`), never the sessions that exist."""
        now = self.clock() if now is None else now
        dropped: list[SessionKey] = []
        wills: list[Message] = []
        for kind, key in self._deadlines.due(now):
            if kind == EXPIRY:
                state = self.sessions.get(key)
                if state is None or key in self._live:
                    continue
                self._drop_state(state)
                self.sessions_expired += 1
                dropped.append(key)
                if self.peer is not None:  # gone from the cluster's registry too
                    self.peer.ended(key, False)
                self._deadlines.cancel(WILL, key)  # its will goes now, with the session
            will = self._wills.pop(key, None)
            if will is not None:
                self.publish(will)
                wills.append(will)
        return dropped, wills

    # -- subscriptions ------------------------------------------------------------------

    def subscribe(self, state: SessionState, mounted_filter: str, qos: QoS,
                  grant: Grant | None = None) -> bool:
        """Add or replace a subscription (MQTT-3.8.4-3); `grant`: its MQTT 5 options (the
        QoS in it is `qos`).

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
        grant = Grant(qos) if grant is None else dataclasses.replace(grant, qos=QoS(qos))
        if grant.plain:
            state.options.pop(mounted_filter, None)
        else:
            state.options[mounted_filter] = grant
        state.subscriptions[mounted_filter] = qos
        self._tree_add(state, mounted_filter, grant)
        self.sessions.put(state)
        return True

    def _tree_add(self, state: SessionState, mounted_filter: str, grant: Grant) -> None:
        if not self._shared.join(self._tree, state.key, mounted_filter, grant):
            self._tree.add(mounted_filter, state.key, grant.qos)

    def _tree_remove(self, state: SessionState, mounted_filter: str) -> None:
        if not self._shared.leave(self._tree, state.key, mounted_filter):
            self._tree.remove(mounted_filter, state.key)

    def retained_for(self, mounted_filter: str, qos: QoS, sub_ids: tuple[int, ...] = ()
                     ) -> Iterator[Message]:
        """Lazily, the retained messages a new subscription gets (MQTT-3.3.1-6), retain set,
        each at min(its QoS, the granted `qos`): the caller pulls them as it can send them.
        One past its MQTT 5 expiry is cleared, never sent. A shared subscription gets none
        (MQTT-3.8.4-4 of 5.0)."""
        if split_shared(mounted_filter) is not None:
            return
        for m in self.retained.matching(mounted_filter):
            if m.expired(self.clock()):
                self.expired += 1
                self.retained.clear(m.topic)
                continue
            yield Message(m.topic, m.payload, QoS(min(m.qos, qos)), True, props=m.props,
                          expires_at=m.expires_at, sub_ids=sub_ids)

    def unsubscribe(self, state: SessionState, mounted_filter: str) -> None:
        if state.subscriptions.pop(mounted_filter, None) is not None:
            state.options.pop(mounted_filter, None)
            self._tree_remove(state, mounted_filter)
            self._count_filters(state.key[0], -1)
            self.sessions.put(state)

    # -- routing ------------------------------------------------------------------------

    def publish(self, message: Message) -> int:
        """Route one message to every matching session; return how many sessions got it.

        MQTT 5: an expired message goes nowhere; a session with subscription options gets
        its copy as `gateway.delivery.deliver` says (no local, retain as published,
        identifiers); a shared subscription's group gives its copy to one member."""
        self.routed += 1
        if message.expires_at is not None and message.expired(self.clock()):
            self.expired += 1
            return 0
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

    def _route(self, message: Message) -> int:
        matches = self._tree.match(message.topic)
        count = 0
        size = len(message.payload)
        offline: list[tuple[SessionState, Message]] = []
        for key, granted in matches.items():
            retain, sub_ids = False, ()
            shared = len(key) == 3
            if shared:  # a shared subscription's group (gateway.shared): one member
                picked = self._shared.pick(key, self._live.__contains__)  # type: ignore[arg-type]
                if picked is None:
                    continue
                key, grant = picked
                granted = grant.qos
                sub_ids = (grant.identifier,) if grant.identifier else ()
            state = self.sessions.get(key)  # type: ignore[arg-type]
            if state is None:
                continue
            if state.options and not shared:
                how = deliver(state.subscriptions, state.options, message.topic,
                              message.origin == key)
                if how is None:
                    continue
                granted, keep_retain, sub_ids = how
                retain = keep_retain and message.retain
            qos = QoS(min(message.qos, granted))
            outlet = self._live.get(key)  # type: ignore[arg-type]
            if outlet is None and qos == QoS.AT_MOST_ONCE:
                continue
            if outlet is None:
                why = self._refuse_offline(state, size)
                if why is not None:
                    self.dropped += 1
                    self.drop_reasons[why] += 1
                    continue
            # Messages are immutable: a copy that would equal the message is the message.
            if qos == message.qos and retain == message.retain and not sub_ids \
                    and message.ref is None:
                copy = message
            else:
                copy = Message(message.topic, message.payload, qos, retain, None,
                               message.props, message.expires_at, None, sub_ids)
            if state.offer(copy):
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
        kept = Message(message.topic, message.payload, message.qos, True, props=message.props,
                       expires_at=message.expires_at)
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
            "expired": self.expired,
            "sessions_expired": self.sessions_expired,
        }
