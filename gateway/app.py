"""The gateway process: its shared state, the ingest seam, and running until a signal.

`Gateway` holds what every connection shares: the configuration, the log, the current TLS
contexts, the broker, the connection limits and counters, the latency histograms.
`Gateway.submit` is the one place inbound application messages are handed to ingest (through
`IngestPort`); the connection acknowledges a PUBLISH only once the returned `PendingBatch`
says it is stored. `run_gateway(config, log)`, the composition root, builds it once with its
services (store, ingest, broker state, journal, bar list) and serves until SIGTERM/SIGINT,
then stops accepting, closes every session with SERVER_SHUTDOWN and returns.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Container, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import trio

from .activity import Activity
from .admission import HandshakeSlots
from .broker import Broker, Message
from .config import GatewayConfig
from .errors import ConfigError
from .latency import Latencies
from .limits import ConnectionLimits, NetworkRates, PendingPool, SourceRates, TokenBucket
from .logs import DAY, EventLog, RotatingLogFile, open_log_file
from .provisioning import Provisioning
from .reasons import DisconnectReason
from .registry import ConnectionRegistry
from .tls import TLSContexts

if TYPE_CHECKING:
    from .connection import Connection
    from .persistence import Journal

# The counter of inbound messages per QoS, indexed by QoS (no string built per message).
_MESSAGES_IN = ("messages_in_qos0", "messages_in_qos1", "messages_in_qos2")


class ReplyMessage(Protocol):
    """A message ingest asks the gateway to publish into the device's jail."""

    topic: str  # device-relative
    payload: bytes
    qos: int
    retain: bool


class PendingBatch(Protocol):
    """A submitted batch: `wait()` returns its replies once what must be durable is;
    `readings`: how many readings it queued (the per-network readings rate counts them)."""

    readings: int

    async def wait(self) -> Sequence[ReplyMessage]: ...


class IngestPort(Protocol):
    """Takes inbound application messages before they are acknowledged (`gateway.ingest`).

    `submit_many` gets every PUBLISH decoded from one socket read (device-relative topics)
    and waits only for queue room (backpressure); `PendingBatch.wait()` raising means "not
    stored": the connection closes without acknowledging, so the device sends them again.
    """

    async def submit_many(self, network: uuid.UUID, client_id: str,
                          messages: Sequence[tuple[str, bytes, int]],
                          now: datetime) -> PendingBatch: ...


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
    ) -> None:
        self.config = config
        self.log = log if log is not None else open_log(config)
        # `clock`: UTC now, for the CRL's freshness (tests pass their own).
        self.tls = TLSContexts(config, clock=clock)
        self.broker = broker if broker is not None else Broker(
            max_queued=config.max_queued,
            max_sessions_per_network=config.max_sessions_per_network,
            max_retained_per_network=config.max_retained_per_network,
            max_retained_bytes_per_network=config.max_retained_bytes_per_network,
            max_subscriptions_per_session=config.max_subscriptions_per_session,
        )
        self.ingest = ingest
        self.status = status
        self.journal = journal  # the broker's durable MQTT state (persistence.py), if any
        self.bars = bars  # networks barred by an erasure (the HTTP API's BarList)
        self.limits = ConnectionLimits(
            config.max_connections,
            config.max_connections_per_network,
            TokenBucket(config.connection_rate, config.connection_burst, trio.current_time()
                        if _in_trio() else 0.0),
            SourceRates(config.connection_rate_per_source, config.connection_burst_per_source),
        )
        self.pending = PendingPool(config.max_pending, config.max_pending_per_source)
        self.handshakes = HandshakeSlots(config.max_handshakes_in_progress)
        # Readings per second per network, shared by its connections (time: trio's clock,
        # passed in by the caller).
        self.readings = NetworkRates(config.max_readings_per_second_per_network,
                                     config.readings_burst_per_network)
        self.counters: Counter[str] = Counter()
        self.latency = Latencies()  # histograms for /metrics
        # Live connections, by network and by certificate serial.
        self.connections: ConnectionRegistry[Connection] = ConnectionRegistry()
        # The console's gateway.accounts.OwnerCodeSink (None: no console): it records each
        # network's owner-code hash from its certificate, off the event loop.
        self.owner_codes: Any = None
        # Enrolment by claim and renewal, relayed to the online signer (provisioning.py).
        self.provisioning = Provisioning(config, self.log, self.counters)
        # Reports and refused connections per minute, for the console (activity.py).
        self.activity = Activity(max_networks=config.console_activity_networks,
                                 counters=self.counters)

    # -- the ingest seam ----------------------------------------------------------------

    def route(self, message: Message) -> None:
        """Relay one mounted message to its subscribers (and the retained store)."""
        self.counters[_MESSAGES_IN[message.qos]] += 1
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

    async def submit(self, connection: Connection, messages: list[Message],
                     mark: int | None = None) -> PendingBatch | None:
        """The one place inbound messages meet ingest: hand over one read's publishes.

        `mark`: routing them changed the broker's durable state up to this journal mark
        (retained, queued for offline sessions); the acknowledgements wait for it too.
        Returns None without ingest and mark (routing is all there is: the caller
        acknowledges at once), else the `PendingBatch` whose `wait()` the caller awaits before
        acknowledging.
        """
        pending: PendingBatch | None = None
        if self.ingest is not None:
            identity, jail = connection.identity, connection.jail
            assert identity is not None and jail is not None
            assert connection.client_id is not None
            pending = await self.ingest.submit_many(
                identity.network_uuid, connection.client_id,
                [(jail.unmount(m.topic), m.payload, int(m.qos)) for m in messages],
                datetime.now(UTC),
            )
            self.activity.reports(identity.network_uuid, pending.readings)
        if mark is None or self.journal is None:
            return pending
        return _Durable(pending, self.journal, mark)

    async def record_status(self, connection: Connection, *, connected: bool) -> None:
        """Keep the network's connection status in the store (advisory: errors are logged)."""
        identity, client_id = connection.identity, connection.client_id
        if self.status is None or identity is None or client_id is None:
            return
        now = datetime.now(UTC)
        try:
            if connected:
                await self.status.connected(identity.network_uuid, client_id,
                                            identity.serial_hex, now)
            else:
                reason = str(connection.reason or DisconnectReason.CONNECTION_LOST)
                await self.status.disconnected(identity.network_uuid, client_id, reason, now)
        except Exception as exc:  # the session must not fail on a status write
            self.counters["status_failures"] += 1
            self.log.emit("status_failed", network=identity.network, client_id=client_id,
                          detail=f"{type(exc).__name__}: {exc}")

    async def record_seen(self, connection: Connection) -> None:
        """Note activity of the connection's network (queued by the store, not waited for)."""
        if self.status is None or connection.identity is None:
            return
        try:
            await self.status.seen(connection.identity.network_uuid, datetime.now(UTC))
        except Exception as exc:
            self.counters["status_failures"] += 1
            self.log.emit("status_failed", network=connection.identity.network,
                          detail=f"{type(exc).__name__}: {exc}")

    # -- connection bookkeeping ---------------------------------------------------------

    def connection_opened(self, connection: Connection) -> None:
        self.connections.add(connection)
        self.counters["connections_accepted"] += 1

    def network_opened(self, connection: Connection) -> None:
        """A connection passed admission: count it against its network."""
        assert connection.identity is not None
        self.connections.admitted(connection)
        self.counters["handshakes_accepted"] += 1
        if self.owner_codes is not None and connection.identity.owner_hash is not None:
            self.owner_codes.offer(connection.identity.network, connection.identity.owner_hash)

    def connection_closed(self, connection: Connection) -> None:
        if self.connections.remove(connection):
            self.limits.close_socket()
        if connection.network_counted and connection.identity is not None:
            self.limits.close_network(connection.identity.network)
        if connection.reason is not None:
            self.counters[f"disconnect_{connection.reason}"] += 1
        self.activity.closed(connection)

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
        self.counters["revocations_applied"] += closed
        return closed

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
            **({"mqtt_state": self.journal.statistics()} if self.journal is not None else {}),
            "counters": dict(self.counters),
            "tls_reloads": self.tls.reloads,
            "crl_loads": self.tls.crl_loads,
        }


class _Durable:
    """A `PendingBatch` that also waits for the broker journal up to `mark`."""

    def __init__(self, pending: PendingBatch | None, journal: Journal, mark: int) -> None:
        self.pending, self.journal, self.mark = pending, journal, mark
        self.readings = pending.readings if pending is not None else 0

    async def wait(self) -> Sequence[ReplyMessage]:
        replies = await self.pending.wait() if self.pending is not None else ()
        await self.journal.wait_durable(self.mark)
        return replies


def _in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


async def run_gateway(config: GatewayConfig, log: EventLog) -> None:
    """The composition root: build the gateway's services once, then serve until SIGTERM or
    SIGINT; then stop accepting and close every session.

    Without `data` the gateway routes only. With it: the SQLite store there, ingest through
    it (acknowledgements mean "committed"), the broker's state loaded from it and journaled
    to it, and the bar list of erased networks beside it.

    Raises:
        ConfigError: the TLS files, the store or its MQTT state cannot be loaded.
    """
    data = config.data
    if data is None:
        gateway = Gateway(config, log=log)  # ConfigError for unusable TLS files
        if config.http_address is not None:
            log.emit("http_off", detail="no data folder (--data): the HTTPS API serves the "
                                        "store, so it is not started")
        await _serve_until_signal(gateway)
        return
    from .http.bars import BARS_FILE, BarList
    from .ingest import DEFAULT_LIMITS, Ingest
    from .storage.errors import StorageError
    from .storage.sqlite.store import open_sqlite_store
    from .storage.writer import QueueLimits

    queue = QueueLimits(config.max_queued_operations_per_network,
                        config.max_queued_reports_per_network, config.max_queued_reports)
    async with AsyncExitStack() as stack:
        try:
            store = await stack.enter_async_context(open_sqlite_store(data, queue=queue))
        except (StorageError, OSError) as exc:
            raise ConfigError(f"cannot open the store in {data}: {exc}") from None
        ingest = Ingest(store, limits=dataclasses.replace(
            DEFAULT_LIMITS, max_stored_bytes_per_network=config.max_stored_bytes_per_network))
        try:
            broker, journal = await load_mqtt_state(config, store, log)
        except StorageError as exc:
            raise ConfigError(f"cannot load the MQTT state from {data}: {exc}") from None
        gateway = Gateway(config, log=log, ingest=ingest, status=store, broker=broker,
                          journal=journal, bars=BarList(data / BARS_FILE))
        log.emit("store_opened", data=str(data))
        await _serve_until_signal(gateway, store)


async def load_mqtt_state(config: GatewayConfig, store: object,
                          log: EventLog) -> tuple[Broker, Journal]:
    """A broker loaded from `store` (retained messages, persistent sessions and their
    queues) and the journal that keeps its changes there: run `journal.run` beside it, and
    `await journal.flush()` once the connections are closed.

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
        max_queued_bytes_per_network=config.max_queued_bytes_per_network)
    sessions = sum(1 for _ in broker.sessions.all())
    log.emit("mqtt_state_loaded", sessions=sessions,
             retained=len(broker.retained))  # type: ignore[arg-type]
    return broker, journal


async def _serve_until_signal(gateway: Gateway, store: object = None) -> None:
    from .server import serve_mqtt

    try:
        await _serve_nursery(gateway, store, serve_mqtt)
    finally:
        if gateway.journal is not None:
            # What the closing sessions journaled (their offline queues) goes in before
            # the store closes.
            await gateway.journal.flush()  # shielded inside
    gateway.log.emit("stopped", **gateway.statistics())


LOG_MAINTENANCE_INTERVAL = 3600.0  # seconds between log rotation-by-date and retention checks


async def _maintain_log(log: EventLog, *, clock: Callable[[], float] = time.time) -> None:
    """Rotate the log file by date and delete rotated files past their retention: now, then
    just after each UTC midnight and at least hourly (a quiet gateway writes no line that
    would do it). `clock`: the wall clock in epoch seconds."""
    while True:
        log.maintain()
        await trio.sleep(min(LOG_MAINTENANCE_INTERVAL, DAY - clock() % DAY + 1.0))


async def _serve_nursery(gateway: Gateway, store: object, serve_mqtt) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            if gateway.journal is not None:
                await nursery.start(gateway.journal.run)
            await nursery.start(serve_mqtt, gateway)
            nursery.start_soon(_maintain_log, gateway.log)
            from .http.server import HttpStatistics
            from .http.wiring import http_limits

            http_stats = HttpStatistics(http_limits(gateway.config))
            if store is not None and gateway.config.http_address is not None:
                from .http.wiring import serve_gateway_http  # the API reads the store

                await nursery.start(serve_gateway_http, gateway, store, http_stats)
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
