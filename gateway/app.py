"""The gateway process: its shared state, the ingest seam, and running until a signal.

`Gateway` holds what every connection shares: the configuration, the log, the current TLS
contexts, the broker, the connection limits and counters. `Gateway.accept_publish` is the
one place an inbound application message is handed to ingest and routed; the connection
acknowledges the PUBLISH only after it returns, so a durable `Ingest` (issue 6) makes the
acknowledgement mean "stored". `run_gateway(config)` serves until SIGTERM/SIGINT, then stops
accepting, closes every session with SERVER_SHUTDOWN and returns.
"""

from __future__ import annotations

import signal
import sys
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol, TextIO

import trio

from .broker import Broker, Message
from .config import GatewayConfig
from .errors import ConfigError
from .limits import ConnectionLimits, TokenBucket
from .logs import EventLog, open_log_file
from .mqtt.packets import QoS
from .reasons import DisconnectReason
from .tls import TLSContexts

if TYPE_CHECKING:
    from .server import Connection


class Reply(Protocol):
    """A message ingest asks the gateway to publish into the device's jail."""

    topic: str  # device-relative
    payload: bytes
    qos: int
    retain: bool


class Ingest(Protocol):
    """Takes an inbound application message before it is acknowledged (gateway.ingest.Ingest).

    `handle` returns once what must be durable is committed; raising means "not stored":
    the connection closes without acknowledging, so the device sends the message again.
    """

    async def handle(self, network: uuid.UUID, client_id: str, topic: str, payload: bytes,
                     qos: int, now: datetime) -> Sequence[Reply]: ...


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
                stream = open_log_file(path)
            except OSError as exc:
                raise ConfigError(f"cannot open log file {path}: {exc.strerror}") from None
    return EventLog(stream, truncate_ips=config.truncate_ip, path=path)


class Gateway:
    """Everything the connections of one gateway process share."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        log: EventLog | None = None,
        ingest: Ingest | None = None,
        broker: Broker | None = None,
    ) -> None:
        self.config = config
        self.log = log if log is not None else open_log(config)
        self.tls = TLSContexts(config)
        self.broker = broker if broker is not None else Broker(
            max_queued=config.max_queued,
            max_sessions_per_network=config.max_sessions_per_network,
            max_retained_per_network=config.max_retained_per_network,
        )
        self.ingest = ingest
        self.limits = ConnectionLimits(
            config.max_connections,
            config.max_connections_per_network,
            TokenBucket(config.connection_rate, config.connection_burst, trio.current_time()
                        if _in_trio() else 0.0),
        )
        self.counters: Counter[str] = Counter()
        self.connections: set[Connection] = set()

    # -- the ingest seam ----------------------------------------------------------------

    async def accept_publish(self, connection: Connection, message: Message) -> list[Message]:
        """Hand one inbound message to ingest, then route it; the caller acks afterwards.

        Returns ingest's replies, mounted, for the caller to publish after the
        acknowledgement (`model/accepted`, `errors`, ...).
        """
        self.counters[f"messages_in_qos{int(message.qos)}"] += 1
        replies: list[Message] = []
        if self.ingest is not None:
            identity, jail = connection.identity, connection.jail
            assert identity is not None and jail is not None
            assert connection.client_id is not None
            answers = await self.ingest.handle(
                identity.network_uuid, connection.client_id, jail.unmount(message.topic),
                message.payload, int(message.qos), datetime.now(UTC),
            )
            replies = [
                Message(jail.mount_topic(r.topic), r.payload, QoS(r.qos), r.retain)
                for r in answers
            ]
        self.broker.publish(message)
        return replies

    # -- connection bookkeeping ---------------------------------------------------------

    def connection_opened(self, connection: Connection) -> None:
        self.connections.add(connection)
        self.counters["connections_accepted"] += 1

    def network_opened(self, connection: Connection) -> None:
        """A connection passed admission: count it against its network."""
        assert connection.identity is not None
        self.counters["handshakes_accepted"] += 1

    def connection_closed(self, connection: Connection) -> None:
        if connection in self.connections:
            self.connections.discard(connection)
            self.limits.close_socket()
        if connection.identity is not None:
            self.limits.close_network(connection.identity.network)
        if connection.reason is not None:
            self.counters[f"disconnect_{connection.reason}"] += 1

    # -- revocation ---------------------------------------------------------------------

    def close_revoked(self) -> int:
        """Close every live connection whose certificate the current CRL lists."""
        revoked = self.tls.revoked
        closed = 0
        for connection in list(self.connections):
            identity = connection.identity
            if identity is not None and identity.serial in revoked:
                self.log.emit(
                    "revoked", network=identity.network, client_id=connection.client_id,
                    serial=identity.serial, reason=str(DisconnectReason.REVOKED),
                )
                connection.close(DisconnectReason.REVOKED, "certificate revoked")
                closed += 1
        self.counters["revocations_applied"] += closed
        return closed

    def check_crl_freshness(self) -> None:
        """Warn when the CRL is stale or about to be: OpenSSL then refuses every device."""
        next_update = self.tls.state.crl_next_update
        if next_update is None:
            return
        left = next_update - datetime.now(UTC)
        if left.total_seconds() <= 0:
            self.log.emit("crl_expired", next_update=next_update.isoformat(),
                          detail="every handshake is refused: run `fleet-ca crl`")
        elif left.days < 7:
            self.log.emit("crl_expiring", next_update=next_update.isoformat(),
                          detail="run `fleet-ca crl` (daily from cron)")

    def statistics(self) -> dict[str, object]:
        return {
            "connections": len(self.connections),
            "limits": self.limits.statistics(),
            "broker": self.broker.statistics(),
            "counters": dict(self.counters),
            "tls_reloads": self.tls.reloads,
        }


def _in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


async def run_gateway(gateway: Gateway) -> None:
    """Serve until SIGTERM or SIGINT; then stop accepting and close every session."""
    from .server import serve_mqtt

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_mqtt, gateway)

            async def wait_for_signal() -> None:
                async for signum in signals:
                    gateway.log.emit("stopping", signal=signal.Signals(signum).name)
                    break
                # Closing sessions takes the shutdown path of serve_mqtt.
                nursery.cancel_scope.cancel()

            nursery.start_soon(wait_for_signal)
    gateway.log.emit("stopped", **gateway.statistics())
