"""The gateway process: its shared state, the ingest seam, and running until a signal.

`Gateway` holds what every connection shares: the configuration, the log, the current TLS
contexts, the broker, the connection limits, and the metrics (`gateway.metrics`). Its
methods take values (an identity, a client id, a reason), never a connection to read back.
`Gateway.accept` is the one place inbound reports are handed to ingest (through
`IngestPort`); it returns one `durability.DurabilityHandle` covering the reports' commit and
the broker journal's, and the connection acknowledges a PUBLISH only once it says so.
`run_gateway(config, log)`, the composition root, builds it once with its services (store,
ingest, broker state, journal, bar list, the `GatewayMetrics`) and serves until SIGTERM or
SIGINT, then stops accepting, closes every session with SERVER_SHUTDOWN and returns.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Container, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import trio

from .activity import Activity
from .admission import HandshakeSlots
from .broker import Broker
from .broker_state import Message
from .commands import RESPONSE_TOPIC, Commands
from .config import GatewayConfig
from .device_session import SessionServices
from .durability import DurabilityHandle, IngestPort, JournaledBatch
from .errors import ConfigError
from .limits import ConnectionLimits, NetworkRates, PendingPool, SourceRates, TokenBucket
from .logs import EventLog, RotatingLogFile, SourceLog, open_log_file
from .maintenance import maintain_history, maintain_log
from .metrics import GatewayMetrics, counts
from .provisioning import Provisioning
from .reasons import DisconnectReason
from .registry import ConnectionRegistry
from .tls import TLSContexts

if TYPE_CHECKING:
    from .cluster import Cluster
    from .cluster.nodes import ClusterView
    from .connection import Connection
    from .identity import DeviceIdentity
    from .persistence import Journal


class StatusPort(Protocol):
    """Where connection status per network is kept (the store of `gateway.storage`)."""

    async def connected(self, network: uuid.UUID, client_id: str, cert_serial: str | None,
                        now: datetime) -> None: ...

    async def disconnected(self, network: uuid.UUID, client_id: str, reason: str,
                           now: datetime) -> None: ...

    async def seen(self, network: uuid.UUID, now: datetime) -> None: ...


def open_log(config: GatewayConfig, stream: TextIO | None = None) -> EventLog:
    """The EventLog the config asks for (stderr, or a file appended to).

    Raises:
        ConfigError: the log file cannot be opened.
    """
    path = None
    if stream is None:
        if config.log_file == "-":
            stream = sys.stderr
        else:
            path = config.log_file
            try:
                if config.log_max_bytes > 0:  # capped: the standard library rotates it
                    rotating = RotatingLogFile(path, max_bytes=config.log_max_bytes,
                                               backups=config.log_backups,
                                               retention_days=config.log_retention_days)
                    return EventLog(truncate_ips=config.truncate_ip, rotating=rotating,
                                    level=config.log_level)
                stream = open_log_file(path)
            except OSError as exc:
                raise ConfigError(f"cannot open log file {path}: {exc.strerror}") from None
    return EventLog(stream, truncate_ips=config.truncate_ip, path=path, level=config.log_level)


class Gateway:
    """Everything the connections of one gateway process share."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        log: EventLog | None = None,
        ingest: IngestPort | None = None,
        status: StatusPort | None = None,
        broker: Broker | None = None,
        journal: Journal | None = None,
        bars: Container[uuid.UUID] = frozenset(),
        clock: Callable[[], datetime] | None = None,
        metrics: GatewayMetrics | None = None,
        wall_clock: Callable[[], float] = time.time,
        peers: Cluster | None = None,
        membership: ClusterView | None = None,
    ) -> None:
        self.config = config
        # What every part counts (gateway.metrics); built by the composition root.
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        self._messages_in = self.metrics.mqtt.messages_in  # counted per PUBLISH
        self.log = log if log is not None else open_log(config)
        # `clock`: UTC now, for the CRL's freshness (tests pass their own).
        self.tls = TLSContexts(config, clock=clock)
        self.broker = broker if broker is not None else Broker(
            max_queued=config.max_queued,
            max_sessions_per_network=config.max_sessions_per_network,
            max_retained_per_network=config.max_retained_per_network,
            max_retained_bytes_per_network=config.max_retained_bytes_per_network,
            max_subscriptions_per_session=config.max_subscriptions_per_session,
            clock=wall_clock,  # MQTT 5 message and session expiry (epoch seconds)
        )
        self.ingest = ingest
        self.status = status
        self.journal = journal  # the broker's durable MQTT state (persistence.py), if any
        self.bars = bars  # networks barred by an erasure (the HTTP API's BarList)
        # The other nodes sharing its PostgreSQL (gateway.cluster.Cluster), in cluster mode.
        self.peers = peers
        # This node's row in the cluster's node table and what it last read of the others
        # (gateway.cluster.nodes), in cluster mode.
        self.membership = membership
        self.limits = ConnectionLimits(
            config.max_connections,
            config.max_connections_per_network,
            TokenBucket(config.connection_rate, config.connection_burst, trio.current_time()
                        if _in_trio() else 0.0),
            SourceRates(config.connection_rate_per_source, config.connection_burst_per_source),
        )
        self.pending = PendingPool(config.max_pending, config.max_pending_per_source)
        self.handshakes = HandshakeSlots(config.max_handshakes_in_progress)
        # Refusals of connections not yet identified: a log budget per source address.
        self.refusals = SourceLog(self.log, rate=config.log_lines_per_connection,
                                  burst=config.log_lines_burst, metrics=self.metrics.mqtt)
        # Readings per second per network, shared by its connections (time: trio's clock,
        # passed in by the caller).
        self.readings = NetworkRates(config.max_readings_per_second_per_network,
                                     config.readings_burst_per_network)
        # Live connections, by network and by certificate serial.
        self.connections: ConnectionRegistry[Connection] = ConnectionRegistry()
        # The console's gateway.accounts.OwnerCodeSink (None: no console): it records each
        # network's owner-code hash from its certificate, off the event loop.
        self.owner_codes: Any = None
        # Enrolment by claim and renewal, relayed to the online signer (provisioning.py).
        self.provisioning = Provisioning(config, self.log, self.metrics,
                                         announce=None if peers is None else peers.renewed)
        # What every device session shares (device_session.py).
        self.sessions = SessionServices(self.broker, self.limits, self.route, self.durable_mark,
                                        self.metrics.mqtt, config.max_filters_per_subscribe,
                                        config.max_session_expiry, config.max_keepalive,
                                        self.broker.clock)
        # Control commands awaiting an MQTT 5 device's answer (commands.py, the HTTP API).
        self.commands = Commands(per_network=config.max_commands_per_network)
        self._response_suffix = "/" + RESPONSE_TOPIC
        # Reports and refused connections per minute, for the console (activity.py).
        self.activity = Activity(max_networks=config.console_activity_networks,
                                 dropped=self.metrics.console.activity_networks_dropped)

    # -- the ingest seam ----------------------------------------------------------------

    def route(self, message: Message) -> None:
        """Relay one mounted message to its subscribers (and the retained store); an MQTT 5
        answer to a correlated control command is tied to it (`gateway.commands`)."""
        self._messages_in.inc(message.qos)
        props = message.props
        if (props is not None and props.correlation_data is not None
                and message.topic.endswith(self._response_suffix)
                and self.commands.waiting(message.network)
                and message.topic == message.network + self._response_suffix):
            self.commands.answer(message.network, props.correlation_data, message.payload,
                                 datetime.now(UTC), props.content_type)
        self.broker.publish(message)

    def durable_mark(self) -> int:
        """The broker journal's position (0 without a store): see `gateway.persistence`."""
        return self.journal.mark() if self.journal is not None else 0

    async def wait_durable(self, mark: int) -> None:
        """Return once the broker's journal is committed up to `mark` (at once without one).

        Raises:
            StorageError: that commit failed.
        """
        if self.journal is not None:
            await self.journal.wait_durable(mark)

    async def accept(self, network: uuid.UUID, client_id: str,
                     reports: Sequence[tuple[str, bytes, int]],
                     journal: int | None = None) -> DurabilityHandle | None:
        """The one place inbound reports meet ingest: hand over one read's publishes
        (device-relative topic, payload, QoS), already routed.

        `journal`: routing them changed the broker's durable state up to this journal mark
        (retained, queued for offline sessions); the handle waits for it too. Returns None
        without ingest and journal mark (routing is all there is: acknowledge at once), else
        the one handle whose `wait()` the caller awaits before acknowledging.
        """
        pending: DurabilityHandle | None = None
        if self.ingest is not None:
            pending = await self.ingest.submit_many(network, client_id, reports,
                                                    datetime.now(UTC))
            self.activity.reports(network, pending.readings)
        if journal is None or self.journal is None:
            return pending
        return JournaledBatch(pending, self.journal, journal)

    def drain(self, server_reference: str | None = None) -> int:
        """Close every live device connection as a draining node does: MQTT 5 clients get
        DISCONNECT 0x9C use another server (with `server_reference`, e.g. "host:8883");
        3.1.1 clients are just closed. Returns how many were closed."""
        closed = 0
        for outlet in self.broker.live().values():
            outlet.close(DisconnectReason.USE_ANOTHER_SERVER, server_reference)
            closed += 1
        return closed

    def run_deadlines(self) -> None:
        """Run the broker's due MQTT 5 deadlines (session expiry, delayed wills) and log
        each (see `serve_deadlines`)."""
        dropped, wills = self.broker.tick()
        mqtt = self.metrics.mqtt
        for network, client_id in dropped:
            mqtt.sessions_expired.inc()
            self.log.emit("session_expired", network=network, client_id=client_id)
        for will in wills:
            mqtt.wills_published.inc()
            self.log.emit("will_published", network=will.network, delayed=True)

    async def serve_deadlines(self, *, interval: float = 1.0,
                              task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                              ) -> None:
        """Run `run_deadlines` every `interval` seconds (the resolution of MQTT 5 session
        expiry and will delay); cost per pass: what is due."""
        task_status.started()
        while True:
            self.run_deadlines()
            await trio.sleep(interval)

    async def record_connected(self, identity: DeviceIdentity, client_id: str) -> None:
        """Keep the network's connection status in the store (advisory: errors are logged)."""
        if self.status is not None:
            await self._record(identity, client_id, self.status.connected(
                identity.network_uuid, client_id, identity.serial_hex, datetime.now(UTC)))

    async def record_disconnected(self, identity: DeviceIdentity, client_id: str,
                                  reason: DisconnectReason) -> None:
        """The network's device left for `reason` (advisory, as `record_connected`)."""
        if self.status is not None:
            await self._record(identity, client_id, self.status.disconnected(
                identity.network_uuid, client_id, str(reason), datetime.now(UTC)))

    async def record_seen(self, identity: DeviceIdentity) -> None:
        """Note activity of the identity's network (queued by the store, not waited for)."""
        if self.status is not None:
            await self._record(identity, None, self.status.seen(identity.network_uuid,
                                                                datetime.now(UTC)))

    async def _record(self, identity: DeviceIdentity, client_id: str | None,
                      write: Awaitable[None]) -> None:
        try:
            await write
        except Exception as exc:  # the session must not fail on a status write
            self.metrics.mqtt.status_failures.inc()
            self.log.emit("status_failed", network=identity.network,
                          **({"client_id": client_id} if client_id is not None else {}),
                          detail=f"{type(exc).__name__}: {exc}")

    # -- connection bookkeeping ---------------------------------------------------------

    def connection_opened(self, connection: Connection) -> None:
        self.connections.add(connection)
        self.metrics.mqtt.connections_accepted.inc()

    def network_opened(self, connection: Connection, identity: DeviceIdentity,
                       der: bytes | None) -> None:
        """A connection passed admission as `identity` (certificate `der`): index it, count
        it."""
        self.connections.admitted(connection)
        self.metrics.mqtt.handshakes_accepted.inc()
        if self.owner_codes is not None and identity.owner_hash is not None:
            self.owner_codes.offer(identity.network, identity.owner_hash)
        # A renewed certificate's first connection: the one it replaced can be revoked now.
        self.provisioning.first_use(identity, der)

    def connection_closed(self, connection: Connection, reason: DisconnectReason | None) -> None:
        """`connection` ended for `reason` (its session, if any, released its network's
        count when it ended: `DeviceSession.end`)."""
        if self.connections.remove(connection):
            self.limits.close_socket()
        if reason is not None:
            self.metrics.mqtt.disconnects.inc(reason)
        self.activity.closed(reason)

    # -- revocation ---------------------------------------------------------------------

    def close_revoked(self) -> int:
        """Close every live connection whose certificate serial the revoked set lists."""
        closed = 0
        for connection in self.connections.with_serial_in(self.tls.revoked.serials):
            identity = connection.identity
            if identity is not None:
                self.log.emit(
                    "revoked", network=identity.network, client_id=connection.client_id,
                    serial=identity.serial, reason=str(DisconnectReason.REVOKED),
                )
                connection.close(DisconnectReason.REVOKED, "certificate revoked")
                closed += 1
        self.metrics.mqtt.revocations_applied.inc(closed)
        return closed + self.provisioning.close_claims(self.tls.revoked.serials)

    def check_crl_freshness(self) -> None:
        """Warn when the CRL is stale or about to be: every connection is then refused."""
        next_update = self.tls.revoked.next_update
        if next_update is None:
            return
        left = next_update - self.tls.clock()
        if left.total_seconds() <= 0:
            self.log.emit("crl_expired", next_update=next_update.isoformat(),
                          detail="every connection is refused (CRL_EXPIRED), resumed TLS "
                                 "sessions too: run `fleet-ca crl`")
        elif left.days < 7:
            self.log.emit("crl_expiring", next_update=next_update.isoformat(),
                          detail="run `fleet-ca crl` (daily from cron)")

    def statistics(self) -> dict[str, object]:
        return {
            "connections": len(self.connections),
            "limits": self.limits.statistics(),
            "pending": self.pending.statistics(),
            "handshakes": self.handshakes.statistics(),
            "readings_rate": {"networks": len(self.readings),
                              "throttled": self.readings.throttled},
            "broker": self.broker.statistics(),
            "commands": {"answered": self.commands.answered,
                         "forgotten": self.commands.forgotten},
            **({"mqtt_state": self.journal.statistics()} if self.journal is not None else {}),
            **({"cluster": self.peers.statistics()} if self.peers is not None else {}),
            "counters": counts(self.metrics.mqtt, self.metrics.provisioning,
                               self.metrics.console, self.metrics.cluster),
            "tls_reloads": self.tls.reloads,
            "crl_loads": self.tls.crl_loads,
        }


def _in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


@asynccontextmanager
async def open_store(config: GatewayConfig) -> AsyncIterator[Any]:
    """The store the configuration names, open and writing: PostgreSQL at `config.store`,
    else SQLite in `config.data` (holding that folder's lock while open).

    Raises:
        gateway.storage.StoreUnavailable: the PostgreSQL server cannot be reached.
        gateway.storage.FolderInUse: another process holds the data folder.
        gateway.storage.StorageError: the store cannot be opened otherwise.
    """
    from .storage.writer import QueueLimits

    queue = QueueLimits(config.max_queued_operations_per_network,
                        config.max_queued_reports_per_network, config.max_queued_reports)
    if config.store is not None:
        from .storage.postgres import open_postgres_store

        # Other nodes' devices are online in the same tables: a starting node must not mark
        # them offline; a dead node's are marked by the node that reaps it.
        async with open_postgres_store(config.store, queue=queue,
                                       reset_connections=False) as store:
            yield store
        return
    assert config.data is not None, "open_store needs data or store"
    from .storage.sqlite.store import open_sqlite_store

    async with open_sqlite_store(config.data, queue=queue) as store:
        yield store


async def run_gateway(config: GatewayConfig, log: EventLog) -> None:
    """The composition root: build the gateway's services once, then serve until SIGTERM or
    SIGINT; then stop accepting and close every session.

    Without `data` or `store` the gateway routes only. With one: the store (`open_store`),
    ingest through it (acknowledgements mean "committed"), the broker's state loaded from it
    and journaled to it, and the bar list of erased networks (`<data>/barred.json`; in
    memory without a data folder).

    Raises:
        ConfigError: the TLS files, the store or its MQTT state cannot be loaded.
        gateway.storage.StoreUnavailable, FolderInUse: as `open_store` (own exit codes).
    """
    data = config.data
    metrics = GatewayMetrics()  # every part counts into this one object
    if data is None and config.store is None:
        gateway = Gateway(config, log=log, metrics=metrics)  # ConfigError: bad TLS files
        if config.http_address is not None:
            log.emit("http_off", detail="no store (--data or --store): the HTTPS API serves "
                                        "the store, so it is not started")
        await _serve_until_signal(gateway)
        return
    from .http.bars import BARS_FILE, BarList
    from .ingest import DEFAULT_LIMITS, Ingest
    from .storage.errors import FolderInUse, StorageError, StoreUnavailable

    where = str(data) if config.store is None else _redacted(config.store)
    async with AsyncExitStack() as stack:
        try:
            store = await stack.enter_async_context(open_store(config))
        except (StoreUnavailable, FolderInUse):
            raise
        except (StorageError, OSError) as exc:
            raise ConfigError(f"cannot open the store in {where}: {exc}") from None
        ingest = Ingest(store, limits=dataclasses.replace(
            DEFAULT_LIMITS, max_stored_bytes_per_network=config.max_stored_bytes_per_network))
        peers, owned, membership = None, None, None
        if config.store is not None:  # cluster mode: every node on this PostgreSQL
            from .cluster.wiring import open_cluster

            # The node's row first: a name a live node holds is refused before anything of
            # the cluster starts under it.
            membership = await _join_cluster(config, stack)
            peers, owned = await open_cluster(config, store, log, metrics,
                                              gone=membership.gone)
        try:
            broker, journal = await load_mqtt_state(config, store, log, peer=peers,
                                                    owned=owned)
        except StorageError as exc:
            raise ConfigError(f"cannot load the MQTT state from {where}: {exc}") from None
        # In a cluster the bars are a table every node reads; alone, a file beside the data.
        bars = peers.bars if peers is not None else BarList(data / BARS_FILE)
        gateway = Gateway(config, log=log, ingest=ingest, status=store, broker=broker,
                          journal=journal, bars=bars, metrics=metrics, peers=peers,
                          membership=membership)
        if config.store is None:
            log.emit("store_opened", data=where)
        else:
            log.emit("store_opened", store=where)
        await _serve_until_signal(gateway, store)


async def _join_cluster(config: GatewayConfig, stack: AsyncExitStack) -> ClusterView:
    """This node's row in the node table (left again if the start fails later on).

    Raises:
        gateway.cluster.nodes.NodeNameInUse: a live node holds this node's name.
        ConfigError: PostgreSQL cannot be reached for it.
    """
    import psycopg

    from .cluster.nodes import ClusterView, default_node_name, join_node, node_connect, release

    try:
        node = await join_node(node_connect(config.store or ""),
                               config.node or default_node_name(),
                               clock=lambda: datetime.now(UTC),
                               dead_after=config.node_dead_after, version=release())
    except psycopg.Error as exc:
        raise ConfigError(f"cannot join the cluster: {exc}") from None
    stack.push_async_callback(trio.to_thread.run_sync, node.close)
    return ClusterView(dead_after=config.node_dead_after, node=node)


def _redacted(url: str) -> str:
    from .storage.postgres.url import redact

    return redact(url)


async def load_mqtt_state(config: GatewayConfig, store: object, log: EventLog, *,
                          peer: Any = None, owned: Container[tuple[str, str]] | None = None
                          ) -> tuple[Broker, Journal]:
    """A broker loaded from `store` (retained messages, persistent sessions and their
    queues) and the journal that keeps its changes there: run `journal.run` beside it, and
    `await journal.flush()` once the connections are closed. In a cluster: `peer` (the
    node's `Cluster`) and `owned`, the session keys this node owns (it loads only those).

    Raises:
        StorageError: the store cannot be read.
    """
    from .persistence import load_broker_state

    broker, journal = await load_broker_state(
        store, max_queued=config.max_queued,
        max_sessions_per_network=config.max_sessions_per_network,
        max_retained_per_network=config.max_retained_per_network,
        max_retained_bytes_per_network=config.max_retained_bytes_per_network,
        max_subscriptions_per_session=config.max_subscriptions_per_session,
        max_queued_bytes_per_session=config.max_queued_bytes_per_session,
        max_queued_bytes_per_network=config.max_queued_bytes_per_network, peer=peer,
        owned=None if owned is None else lambda net, client: (str(net), client) in owned)
    sessions = sum(1 for _ in broker.sessions.all())
    log.emit("mqtt_state_loaded", sessions=sessions,
             retained=len(broker.retained))  # type: ignore[arg-type]
    return broker, journal


async def _serve_until_signal(gateway: Gateway, store: object = None) -> None:
    from .server import serve_mqtt

    try:
        await _serve_nursery(gateway, store, serve_mqtt)
    finally:
        # MQTT 5 wills held for their delay are in memory only: publish them before the
        # journal's last flush rather than lose them.
        for _ in gateway.broker.release_wills():
            gateway.metrics.mqtt.wills_published.inc()
        if gateway.journal is not None:
            # What the closing sessions journaled (their offline queues) goes in before
            # the store closes.
            await gateway.journal.flush()  # shielded inside
    gateway.log.emit("stopped", **gateway.statistics())


def _shown(bound: tuple[str, int]) -> str:
    return f"[{bound[0]}]:{bound[1]}" if ":" in bound[0] else f"{bound[0]}:{bound[1]}"


def _no_reap(node: str) -> None:
    """Without a cluster service (tests that build a Gateway alone): marked dead, no more."""


async def _serve_nursery(gateway: Gateway, store: object, serve_mqtt) -> None:
    """Serve until a signal. In cluster mode (a PostgreSQL store) the node's cluster service
    and its heartbeat start first; `peers.reap(name)` publishes a dead node's wills."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            if gateway.journal is not None:
                await nursery.start(gateway.journal.run)
            if gateway.peers is not None:  # the other nodes, before the first device
                await nursery.start(gateway.peers.serve, gateway, store)
            node = None
            if gateway.membership is not None:  # its heartbeat; it reaps its previous run
                from .cluster.nodes import serve_gateway_node

                node = await nursery.start(partial(
                    serve_gateway_node, gateway, gateway.membership.node,
                    reap=gateway.peers.reap if gateway.peers is not None else _no_reap))
            bound = await nursery.start(serve_mqtt, gateway)
            if node is not None:
                node.mqtt = _shown(bound)
            await nursery.start(gateway.serve_deadlines)
            nursery.start_soon(maintain_log, gateway.log)
            if store is not None and gateway.config.history_retention_days:
                nursery.start_soon(partial(
                    maintain_history, store, gateway.config.history_retention_days,
                    log=gateway.log, expired=gateway.metrics.storage.history_expired))
            from .http.server import HttpStatistics
            from .http.wiring import http_limits

            http_stats = HttpStatistics(http_limits(gateway.config), gateway.metrics.http)
            if store is not None and gateway.config.http_address is not None:
                from .http.wiring import serve_gateway_http  # the API reads the store

                bound = await nursery.start(serve_gateway_http, gateway, store, http_stats)
                if node is not None:
                    node.http = _shown(bound)
            if gateway.config.metrics_address is not None:
                from .http.metrics import gateway_samples, render
                from .http.scrape import serve_scrape

                def exposition() -> bytes:
                    return render(gateway_samples(gateway, store, gateway.ingest, http_stats))

                await nursery.start(partial(serve_scrape, gateway.config.metrics_address,
                                            exposition, log=gateway.log))

            async def wait_for_signal() -> None:
                async for signum in signals:
                    gateway.log.emit("stopping", signal=signal.Signals(signum).name)
                    break
                # Closing sessions takes the shutdown path of serve_mqtt.
                nursery.cancel_scope.cancel()

            nursery.start_soon(wait_for_signal)
