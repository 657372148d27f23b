"""The broker's side of a cluster (`gateway.cluster`): what it tells the other nodes and
how a session moves between nodes, without I/O.

Each node's `Broker` holds the sessions that node owns. Its `peer` (`BrokerPeer`, the
node's `Cluster`) hears of every publish after local routing (`relay`) and of each network
gaining its first or losing its last subscription here (`interest`: relaying goes only where
a network has subscribers). A message another node relayed comes in through
`publish_relayed`: routed to this node's sessions, never relayed again, a retained one
mirrored in memory. `adopt` and `release` move a persistent session into and out of memory
without touching the store (the store already holds it; the owning node changes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .broker_state import Message, SessionKey, SessionState

__all__ = ["BrokerPeer", "PeerMoves"]


class BrokerPeer(Protocol):
    """The other nodes of a cluster, as the broker sees them (`gateway.cluster`)."""

    def relay(self, message: Message, kept: Message | None) -> None:
        """`message` was routed here; `kept`: for a retained one, what its topic retains now
        (None: nothing, cleared or refused)."""

    def interest(self, network: str, present: bool) -> None:
        """The network's first subscription here appeared (True) or its last went (False)."""

    def ended(self, key: SessionKey, persistent: bool) -> None:
        """Session `key`'s live connection detached here (not taken over here): its session
        stays here offline (`persistent`) or is gone (also when its MQTT 5 expiry passed)."""


class PeerMoves:
    """`Broker`'s cluster methods (a mixin: the state is the broker's)."""

    # The broker's own attributes these methods use.
    peer: BrokerPeer | None
    _filters: Any
    sessions: Any
    retained: Any
    _live: Any
    _deadlines: Any
    _wills: Any
    routed: int
    expired: int
    clock: Any

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
        self._index(state, self.clock())

    def release(self, key: SessionKey) -> SessionState | None:
        """Forget the offline session `key` in memory only (another node owns it now, and
        its held will: the session resumes there); returns it, or None when it was live or
        unknown."""
        from .broker import EXPIRY, WILL  # its deadline kinds (no import cycle at call time

        state = self.sessions.get(key)
        if state is None or key in self._live:
            return None
        for topic_filter in state.subscriptions:
            self._tree_remove(state, topic_filter)
        self._count_filters(key[0], -len(state.subscriptions))
        self._charge(state, -state.queued_bytes)
        self._deadlines.cancel(EXPIRY, key)
        self._deadlines.cancel(WILL, key)
        self._wills.pop(key, None)
        self.sessions.unload(key)
        return state

    def publish_relayed(self, message: Message, kept: Message | None) -> int:
        """Route a message another node relayed (`BrokerPeer.relay`), never relaying it
        again; a retained one mirrors that node's retained state (`kept`) in memory."""
        self.routed += 1
        if message.retain:
            self.retained.mirror(message.topic, kept)  # type: ignore[attr-defined]
        if message.expires_at is not None and message.expired(self.clock()):
            self.expired += 1  # expired on its way here
            return 0
        return self._route(message)
