"""`Cluster`: one node's part in a cluster of gateways sharing one PostgreSQL.

Theory of operation (docs/architecture.md, "Cluster"). Each node keeps its in-memory broker
for the sessions it owns; the `Cluster` is that broker's `BrokerPeer` and the gateway's
link to the other nodes, over the `Bus` (NOTIFY for wake-ups) and the tables of
`gateway.cluster.schema` (what must survive a missed NOTIFY).

- Relay (a, b): every message routed here whose network has subscribers on another node
  (`cluster_interest`, mirrored in memory as `remote`) goes on the RELAY channel once, in
  routing order; every retained change goes to every node (each keeps a mirror of the
  retained messages, which new subscriptions read). A receiving node routes it to its own
  sessions only (`Broker.publish_relayed`) and never relays it again, so each session gets
  one copy, at its grant, queued by the node that owns it when it is offline.
- Takeover (c): `claim` makes this node the owner of a session key in `cluster_sessions` (one
  transaction, the network's session cap counted there); when another node owned it, that
  node is told to close its connection (DUPLICATE_CLIENTID), save the session's state to the
  store and forget it; this node then loads it from the store (`Broker.adopt`).
- Bars and erasure (d): `ClusterBars` in `cluster_bars`; an erasure waits until every node
  holding sessions of the network closed them and forgot its state; a CRL reload on one node
  makes the others reload theirs at once.
- A renewal relayed by one node is announced to all, so the renewed certificate's first use
  supersedes the old one on whichever node the device connects to next.
- `reap(dead)`: the wills of a dead node's live sessions are published, its persistent
  sessions become this node's, its clean ones and its interest go.
Every write to the tables goes through one queue, in order (a disconnect's row update
never overtakes the reconnect's claim). After a bus reconnect, `_resync` re-reads the
interest set and the bars.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar
from uuid import UUID

import trio

from ..broker_state import Message, SessionKey
from ..errors import JailViolation
from ..http.bars import Bar
from ..jail import Jail
from ..metrics import ClusterMetrics
from ..mqtt.errors import MQTTError
from ..mqtt.packets import QoS
from ..persistence import state_from_stored
from ..reasons import DisconnectReason
from . import registry
from .bars import ClusterBars
from .bus import CONTROL, RELAY, Bus, wall
from .errors import ClusterUnavailable
from .relay import decode_relay, encode_relay
from .schema import migrate

__all__ = ["Cluster"]

T = TypeVar("T")

CLAIM_WAIT = 5.0  # seconds a CONNECT waits for its registry claim (then SERVER_UNAVAILABLE)
HANDOVER_WAIT = 5.0  # seconds a claim waits for the previous owner to let go
ERASE_WAIT = 5.0  # seconds an erasure waits for the other nodes to close the network
MAX_WRITES = 10_000  # registry writes waiting before new ones are dropped (and counted)


class Cluster:
    """One node's cluster service: build once, `prepare` before the broker loads, then
    `serve(gateway, store)` beside the listeners."""

    def __init__(self, url: str, node: str, *, metrics: ClusterMetrics, log: Any,
                 max_sessions_per_network: int = 1000, max_queue: int = 10_000,
                 gone: Callable[[str], bool] | None = None) -> None:
        """`gone(node)`: whether the node table says `node` no longer runs (a takeover
        from it then does not wait for its answer); None: never known."""
        self.url = url
        self.node = node
        self.metrics = metrics
        self.log = log
        self.max_sessions_per_network = max_sessions_per_network
        self._gone = gone if gone is not None else (lambda node: False)
        self.bus = Bus(url, node, handlers={RELAY: self._on_relay, CONTROL: self._on_control},
                       resync=self._resync, metrics=metrics, log=log, max_queue=max_queue)
        self.bars = ClusterBars(self._write_bar)
        self.remote: dict[str, set[str]] = {}  # network -> other nodes with subscribers
        self._local: set[str] = set()  # networks with subscribers here
        self._writes: deque[tuple[Callable[[Any], Any], Any]] = deque()
        self._wake = trio.Event()
        self._released: dict[SessionKey, trio.Event] = {}
        self._erased: dict[str, tuple[set[str], trio.Event]] = {}
        self._gateway: Any = None
        self._store: Any = None
        self._nursery: trio.Nursery | None = None
        self._resyncs = 0

    # -- start ----------------------------------------------------------------------------

    async def prepare(self, store: Any) -> set[tuple[str, str]]:
        """Migrate the tables, adopt the store's persistent sessions no node owns, read the
        bars; returns the session keys this node owns (load only those).

        Raises:
            ClusterUnavailable: PostgreSQL cannot be reached.
        """
        await self.bus.query.run(migrate)
        keys: list[tuple[UUID, str]] = []
        if store is not None:
            keys = [(s.network, s.client_id) for s in await store.load_sessions(queued=False)]
        owned = await self.bus.query.run(partial(registry.adopt_orphans, keys, self.node))
        await self._read_bars()
        return owned

    async def serve(self, gateway: Any, store: Any = None, *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled: the bus and the registry writer, for `gateway` (its broker,
        connections, journal and TLS) and `store` (persistent sessions taken over)."""
        self._gateway, self._store = gateway, store
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._write_forever)
            await nursery.start(self.bus.serve)
            self.log.emit("cluster_joined", node=self.node)
            task_status.started()

    # -- the table writer -----------------------------------------------------------------

    def _queue(self, fn: Callable[[Any], Any], after: Any = None) -> bool:
        """Queue a table write (`after`: what to call once it committed); False when
        MAX_WRITES are waiting (dropped, counted)."""
        if len(self._writes) >= MAX_WRITES:
            self.metrics.relay_dropped.inc()
            return False
        self._writes.append((fn, after))
        self._wake.set()
        return True

    async def _call(self, fn: Callable[[Any], T]) -> T:
        """Run `fn` after every write queued before it; its result.

        Raises:
            ClusterUnavailable: PostgreSQL cannot be reached.
        """
        done = trio.Event()
        box: list[Any] = []
        if not self._queue(fn, (done, box)):
            raise ClusterUnavailable("too many registry writes waiting")
        await done.wait()
        if isinstance(box[0], Exception):
            raise box[0]
        return box[0]

    async def _write_forever(self) -> None:
        while True:
            if not self._writes:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            fn, after = self._writes[0]
            try:
                result = await self.bus.query.run(fn)
            except Exception as exc:
                unavailable = isinstance(exc, ClusterUnavailable)
                if isinstance(after, tuple):  # a caller waits: it hears the failure
                    self._writes.popleft()
                    after[1].append(exc)
                    after[0].set()
                    continue
                self.log.emit("cluster_write_failed", node=self.node,
                              detail=f"{type(exc).__name__}: {exc}")
                if unavailable:
                    await trio.sleep(0.5)  # kept: retried in order
                else:  # refused by PostgreSQL: retrying would not help
                    self._writes.popleft()
                continue
            self._writes.popleft()
            if isinstance(after, tuple):
                after[1].append(result)
                after[0].set()
            elif after is not None:
                after()

    # -- BrokerPeer -----------------------------------------------------------------------

    def relay(self, message: Message, kept: Message | None) -> None:
        """Relay a message routed here (see the module docstring for which)."""
        if not message.retain and not self.remote.get(message.network):
            return
        if self.bus.send(RELAY, encode_relay(message, kept, wall())):
            self.metrics.relay_sent.inc()
            self.metrics.relay_bytes.inc(len(message.payload))

    def interest(self, network: str, present: bool) -> None:
        if present:
            self._local.add(network)
        else:
            self._local.discard(network)
        note = json.dumps({"k": "interest", "n": network, "p": present})
        self._queue(partial(registry.set_interest, self.node, [(network, present)]),
                    partial(self.bus.send, CONTROL, note))

    def ended(self, key: SessionKey, persistent: bool) -> None:
        """The session `key`'s connection here ended (a takeover on this node excepted)."""
        self._queue(partial(registry.ended, UUID(key[0]), key[1], self.node, persistent))

    # -- claims and takeovers -------------------------------------------------------------

    async def claim(self, jail: Jail, client_id: str, connect: Any) -> str | None:
        """Make this node the owner of the session (jail's network, client_id) before its
        CONNECT (`connect`) is answered; returns why it is refused (the CONNACK's cause),
        else None. Its will is kept in the registry row (`reap` publishes it).

        When another node owned it, that node lets it go first (its state saved to the
        store) and this node loads it from the store."""
        network, clean, will = UUID(jail.network), connect.clean_session, None
        if connect.will is not None:
            try:
                will = registry.Will(jail.mount_topic(connect.will.topic), connect.will.payload,
                                     int(connect.will.qos), connect.will.retain)
            except JailViolation:
                pass  # open_session refuses the CONNECT
        key = (str(network), client_id)
        claimed = None
        with trio.move_on_after(CLAIM_WAIT):
            try:
                claimed = await self._call(partial(
                    registry.claim, network, client_id, self.node, not clean, will,
                    self.max_sessions_per_network))
            except ClusterUnavailable:
                self.metrics.claims_unavailable.inc()
                return "cluster_unavailable"
        if claimed is None:  # PostgreSQL too slow or away: the claim may still land later,
            self.ended(key, not clean)  # so give the key back after it (writes in order)
            self.metrics.claims_unavailable.inc()
            return "cluster_unavailable"
        if claimed.refused:
            self.metrics.sessions_refused.inc()
            return "max_sessions_per_network"
        if claimed.previous is not None:
            released = self._released[key] = trio.Event()
            self.bus.send(CONTROL, json.dumps({"k": "takeover", "to": claimed.previous,
                                               "n": key[0], "c": client_id}))
            if not self._gone(claimed.previous):
                with trio.move_on_after(HANDOVER_WAIT):
                    await released.wait()
            if released.is_set():
                self._released.pop(key, None)
            else:  # gone or silent: its connection's will is ours to publish, unless it
                self._spawn(self._will_unless_released, key, released,  # answers late
                            claimed.previous, claimed.previous_will)
            await self._adopt(network, client_id)
        return None

    async def _will_unless_released(self, key: SessionKey, released: trio.Event, owner: str,
                                    will: registry.Will | None) -> None:
        """The previous owner did not let the session go: if it stays silent for
        HANDOVER_WAIT, it is dead and its connection's will (kept in the row the claim
        replaced) is published here; a live owner publishes it itself when it closes."""
        with trio.move_on_after(HANDOVER_WAIT):
            await released.wait()
        if self._released.get(key) is released:
            del self._released[key]
        if released.is_set() or will is None:
            return
        self._gateway.broker.publish(Message(will.topic, will.payload, QoS(will.qos),
                                             will.retain))
        self._gateway.metrics.mqtt.wills_published.inc()
        self.log.emit("cluster_will_published", network=key[0], client_id=key[1],
                      dead_node=owner)

    async def _adopt(self, network: UUID, client_id: str) -> bool:
        """Load the persistent session from the store into the broker (no-op when it is
        held here already or not stored)."""
        broker, key = self._gateway.broker, (str(network), client_id)
        if self._store is None or broker.sessions.get(key) is not None:
            return False
        for stored in await self._store.load_sessions(network, queued=False):
            if stored.client_id == client_id:
                broker.adopt(state_from_stored(stored, broker.max_queued))
                return True
        return False

    async def _hand_over(self, key: SessionKey, to: str) -> None:
        """Another node claimed `key`: close it here, save its state, forget it, say so."""
        gateway = self._gateway
        outlet = gateway.broker.live().get(key)
        if outlet is not None:
            outlet.close(DisconnectReason.DUPLICATE_CLIENTID, f"session taken over by {to}")
            finished = getattr(outlet, "finished", None)
            if finished is not None:
                with trio.move_on_after(HANDOVER_WAIT):
                    await finished.wait()
        state = gateway.broker.release(key)
        if state is not None and state.subscriptions:
            self.remote.setdefault(key[0], set()).add(to)  # until its interest note comes
        if gateway.journal is not None:
            await gateway.journal.flush()  # its queue and subscriptions are in the store
        self.metrics.takeovers.inc()
        self.log.emit("cluster_session_handed_over", network=key[0], client_id=key[1], to=to)
        self.bus.send(CONTROL, json.dumps({"k": "released", "to": to, "n": key[0],
                                           "c": key[1]}))

    async def online(self, network: UUID) -> bool:
        """Whether `network` has a live session on any node (False when PostgreSQL cannot
        be reached)."""
        try:
            return await self.bus.query.run(partial(registry.live_anywhere, network))
        except ClusterUnavailable:
            return False

    # -- erasure, bars, CRL -----------------------------------------------------------------

    def _write_bar(self, network: UUID, since: datetime | None, by: str | None) -> None:
        note = json.dumps({"k": "bar", "n": str(network), "by": by,
                           "since": since.isoformat() if since else None})
        self._queue(partial(registry.write_bar, network, since, by),
                    partial(self.bus.send, CONTROL, note))

    async def erase(self, network: UUID) -> int:
        """An erasure here (its bar already set): every other node holding sessions of
        `network` closes them and forgets its state before this returns (up to
        ERASE_WAIT); then the registry forgets the network. Returns how many nodes
        answered."""
        net = str(network)
        try:
            others = await self._call(partial(registry.nodes_of, network, self.node))
        except ClusterUnavailable:
            others = set()
        done = trio.Event()
        waiting = set(others)
        self._erased[net] = (waiting, done)
        self.bus.send(CONTROL, json.dumps({"k": "erase", "n": net}))
        if waiting:
            with trio.move_on_after(ERASE_WAIT):
                await done.wait()
        self._erased.pop(net, None)
        self._queue(partial(_forget_network, network))
        return len(others) - len(waiting)

    async def _erase_here(self, net: str, origin: str) -> None:
        gateway = self._gateway
        network = UUID(net)
        self.bars.apply(Bar(network, datetime.now(UTC), origin), network)
        live = gateway.connections.of_network(net)
        for connection in live:
            connection.close(DisconnectReason.ERASED, "network erased by an operator")
        with trio.move_on_after(ERASE_WAIT):
            for connection in live:
                await connection.finished.wait()
        broker = gateway.broker
        for state in [s for s in broker.sessions.all() if s.key[0] == net]:
            broker.release(state.key)
        for message in list(broker.retained.matching(Jail(net).mount_filter("#"))):
            broker.retained.mirror(message.topic, None)
        if gateway.journal is not None:
            await gateway.journal.flush()
        self.log.emit("cluster_erased", network=net, by_node=origin, sessions_closed=len(live))
        self.bus.send(CONTROL, json.dumps({"k": "erased", "to": origin, "n": net}))

    def crl_reloaded(self) -> None:
        """This node read a new CRL: the others reload theirs now."""
        self.bus.send(CONTROL, json.dumps({"k": "crl"}))

    # -- reap -------------------------------------------------------------------------------

    def renewed(self, serial: int, network: str) -> None:
        """This node relayed a renewal: every node watches for the new certificate's first use."""
        self.bus.send(CONTROL, json.dumps({"k": "renewed", "s": serial, "n": network}))

    async def reap(self, dead: str) -> int:
        """Take over from the dead node `dead` (it stopped without cleanup): publish the
        wills of its live sessions, own its persistent sessions (loaded from the store),
        drop its clean sessions and its interest. Returns how many sessions it had.

        Raises:
            ClusterUnavailable: PostgreSQL cannot be reached (nothing changed).
        """
        wills, persistent = await self._call(partial(registry.reap, dead, self.node))
        broker = self._gateway.broker
        for network, client_id, will in wills:
            if will is None:
                continue
            message = Message(will.topic, will.payload, QoS(will.qos), will.retain)
            broker.publish(message)  # here, and relayed
            self._gateway.metrics.mqtt.wills_published.inc()
            self.log.emit("cluster_will_published", network=str(network),
                          client_id=client_id, dead_node=dead)
        status, now = self._gateway.status, datetime.now(UTC)
        for network, client_id, _ in wills:  # its live sessions: offline in the store too
            if status is not None:
                try:
                    await status.disconnected(network, client_id, "NODE_DEAD", now)
                except Exception as exc:  # advisory, as Gateway.record_disconnected
                    self.log.emit("status_failed", network=str(network), client_id=client_id,
                                  detail=f"{type(exc).__name__}: {exc}")
        for network, client_id in persistent:
            await self._adopt(network, client_id)
        self.bus.send(CONTROL, json.dumps({"k": "gone", "node": dead}))
        self._drop_node(dead)
        sessions = len({(n, c) for n, c, _ in wills} | set(persistent))
        wills = [w for w in wills if w[2] is not None]
        self.metrics.reaped.inc(sessions)
        self.log.emit("cluster_reaped", dead_node=dead, wills=len(wills),
                      persistent=len(persistent))
        return sessions

    def _drop_node(self, node: str) -> None:
        for network in [n for n, nodes in self.remote.items() if node in nodes]:
            self.remote[network].discard(node)
            if not self.remote[network]:
                del self.remote[network]

    # -- receiving ------------------------------------------------------------------------

    async def _on_relay(self, origin: str, body: str) -> None:
        try:
            relayed = decode_relay(body)
        except (ValueError, KeyError, TypeError, MQTTError):
            self.log.emit("cluster_bad_note", channel=RELAY, origin=origin)
            return
        self._gateway.broker.publish_relayed(relayed.message, relayed.kept)
        self.metrics.relay_received.inc()
        self.metrics.lag.observe(max(0.0, wall() - relayed.sent_at))

    async def _on_control(self, origin: str, body: str) -> None:
        try:
            note = json.loads(body)
            kind = note["k"]
            await self._control(origin, kind, note)
        except (ValueError, KeyError, TypeError, AttributeError):
            self.log.emit("cluster_bad_note", channel=CONTROL, origin=origin)

    async def _control(self, origin: str, kind: str, note: dict[str, Any]) -> None:
        """Apply one CONTROL note from `origin` (see the module docstring)."""
        to = note.get("to")
        if to is not None and to != self.node:
            return
        if kind == "interest":
            nodes = self.remote.setdefault(note["n"], set())
            if note["p"]:
                nodes.add(origin)
            else:
                nodes.discard(origin)
                if not nodes:
                    del self.remote[note["n"]]
        elif kind == "takeover":
            self._spawn(self._hand_over, (note["n"], note["c"]), origin)
        elif kind == "released":
            event = self._released.get((note["n"], note["c"]))
            if event is not None:
                event.set()
        elif kind == "bar":
            network = UUID(note["n"])
            bar = None if note["by"] is None else Bar(
                network, datetime.fromisoformat(note["since"]), note["by"])
            self.bars.apply(bar, network)
        elif kind == "erase":
            self._spawn(self._erase_here, note["n"], origin)
        elif kind == "erased":
            waiting = self._erased.get(note["n"])
            if waiting is not None:
                waiting[0].discard(origin)
                if not waiting[0]:
                    waiting[1].set()
        elif kind == "crl":
            from ..revocation import reload_tls

            reload_tls(self._gateway, "cluster", force=True)
        elif kind == "renewed":
            self._gateway.provisioning.expect_first_use(int(note["s"]), str(note["n"]))
        elif kind == "gone":
            self._drop_node(note["node"])

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._guarded, fn, *args)

    async def _guarded(self, fn: Callable[..., Any], *args: Any) -> None:
        """A background step's failure is logged, never the node's end."""
        try:
            await fn(*args)
        except Exception as exc:
            self.log.emit("cluster_task_failed", node=self.node, task=fn.__name__,
                          detail=f"{type(exc).__name__}: {exc}")

    async def _resync(self) -> None:
        """After a (re)connect: re-read the interest set and the bars (a NOTIFY may have
        been missed), and write this node's interest again; after a REconnect also the
        retained messages, from the store, in a task of its own."""
        self.remote = await self.bus.query.run(
            partial(registry.reset_interest, self.node, sorted(self._local)))
        await self._read_bars()
        self._resyncs += 1
        if self._resyncs > 1 and self._store is not None:
            self._spawn(self._reload_retained)

    async def _reload_retained(self) -> None:
        """Make the retained mirror the store's again, network by network (relayed changes
        may have been missed while the bus was down). Costs one read per network: it runs
        only after a reconnect."""
        store, broker = self._store, self._gateway.broker
        after, networks = None, 0
        try:
            if self._gateway.journal is not None:  # this node's own changes first
                await self._gateway.journal.settle()
            while True:
                page = await store.list_networks(limit=500, after=after)
                for status in page:
                    net = str(status.network)
                    jail = Jail(net)
                    stored = {jail.mount_topic(r.topic): r for r in
                              await store.retained(status.network)}
                    for old in list(broker.retained.matching(jail.mount_filter("#"))):
                        if old.topic not in stored:
                            broker.retained.mirror(old.topic, None)
                    for topic, r in stored.items():
                        broker.retained.mirror(topic, Message(topic, r.payload, QoS(r.qos),
                                                              True))
                    networks += 1
                if len(page) < 500:
                    break
                after = page[-1].network
        except Exception as exc:  # the store's failure: the next reconnect tries again
            self.log.emit("cluster_retained_reload_failed", node=self.node,
                          detail=f"{type(exc).__name__}: {exc}")
            return
        self.log.emit("cluster_retained_reloaded", node=self.node, networks=networks)

    async def _read_bars(self) -> None:
        rows = await self.bus.query.run(registry.load_bars)
        self.bars.replace(Bar(network, since, by) for network, since, by in rows)

    def statistics(self) -> dict[str, object]:
        return {"node": self.node, "connected": self.bus.connected,
                "remote_networks": len(self.remote), "local_networks": len(self._local),
                "writes_waiting": len(self._writes)}


def _forget_network(network: UUID, conn: Any) -> None:
    with conn.transaction():
        conn.execute("DELETE FROM cluster_sessions WHERE network = %s", (network,))
        conn.execute("DELETE FROM cluster_interest WHERE network = %s", (network,))
