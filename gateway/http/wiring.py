"""Connecting the API core to a running gateway: its TLS files, broker, store and ingest.

- `http_tls(gateway.tls)`: the HTTPS context provider. The same server certificate, root and
  verified CRLs as the MQTT listener, but the client certificate is optional at the TLS layer
  (so /healthz answers without one); when one is sent it is verified, CRL included. Rebuilt
  whenever the gateway reloads its TLS files; the revoked serials it hands out are the
  gateway's verified revoked set, current even while the context cannot be rebuilt.
- `GatewayHooks`: control (ingest validates and stores, the broker publishes retained QoS 1
  into the device's jail) and erasure (bar, close live sessions, forget broker state, erase
  the store's rows).
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import trio

from gateway.audit import AuditTrail
from gateway.broker_state import Message
from gateway.commands import RESPONSE_TOPIC, Command
from gateway.errors import ConfigError
from gateway.jail import Jail
from gateway.mqtt.packets import QoS
from gateway.mqtt.properties import make_properties
from gateway.reasons import DisconnectReason
from gateway.storage.ledger import ErasureLedger
from gateway.tls import TLSContexts

from .api import ControlOutcome, EraseOutcome
from .auth import Operator
from .bars import BarList
from .certs import InventoryLookup

CLOSE_WAIT = 5.0  # seconds erasure waits for a network's live connections to finish


def http_context(contexts: TLSContexts) -> ssl.SSLContext:
    """A server context like the MQTT one, with the client certificate optional."""
    ctx = contexts.build(client_cert=ssl.CERT_OPTIONAL)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@dataclass
class http_tls:  # noqa: N801 - used like a function: http_tls(gateway.tls)
    """Callable TLS provider: (context, revoked serials).

    The serials are the gateway's verified revoked set (`TLSContexts.revoked`), current the
    moment crl.pem changes, as for MQTT; the context is rebuilt after each TLS reload.
    """

    contexts: TLSContexts
    _built_for: Any = None
    _context: ssl.SSLContext | None = None

    def __call__(self) -> tuple[ssl.SSLContext, frozenset[int]]:
        state = self.contexts.state
        if self._context is None or self._built_for is not state:
            try:
                self._context = http_context(self.contexts)
            except ConfigError:
                # The files changed again and are unusable right now: keep serving with the
                # context we have (the MQTT side keeps its old one the same way); the first
                # build has no fallback and raises.
                if self._context is None:
                    raise
            self._built_for = state
        return self._context, self.contexts.revoked.serials


class GatewayHooks:
    """Control and erasure against the live gateway (any part may be None in tests)."""

    def __init__(self, *, store: Any, ingest: Any, gateway: Any = None,
                 bars: BarList | None = None, ledger: ErasureLedger | None = None,
                 audit: AuditTrail | None = None) -> None:
        self.store = store
        self.ingest = ingest
        self.gateway = gateway
        self.bars = bars if bars is not None else BarList()
        self.ledger = ledger
        self.audit = audit  # erasures and commands are entries of the audit trail

    def online(self, network: UUID) -> bool:
        if self.gateway is None:
            return False
        net = str(network)
        return any(key[0] == net for key in self.gateway.broker.live())

    def command(self, correlation_id: str) -> Command | None:
        if self.gateway is None:
            return None
        return self.gateway.commands.get(correlation_id, datetime.now(UTC))

    async def control(self, value: UUID, data: Any, operator: Operator,
                      correlation_id: str | None = None) -> ControlOutcome:
        now = datetime.now(UTC)
        network, reply = await self.ingest.control(value, data, now)
        doc = json.loads(reply.payload)
        # Durable first (a restarted gateway still holds the command), then routed.
        await self.store.set_retained(network, reply.topic, reply.payload, 1, now)
        jail = Jail(str(network))
        props = None
        if correlation_id is not None:
            # MQTT 5 request/response (gateway.commands): an MQTT 5 device answers on the
            # response topic with this correlation data; 3.1.1 devices get neither.
            props = make_properties(response_topic=jail.mount_topic(RESPONSE_TOPIC),
                                    correlation_data=correlation_id.encode())
            if self.gateway is not None:
                self.gateway.commands.expect(Command(correlation_id, str(network), str(value),
                                                     reply.topic, now))
        if self.gateway is not None:
            self.gateway.broker.publish(
                Message(jail.mount_topic(reply.topic), reply.payload, QoS(1), True,
                        props=props))
            self.gateway.metrics.mqtt.controls_published.inc()
            journal = getattr(self.gateway, "journal", None)
            if journal is not None:  # copies queued for offline sessions are stored too
                await journal.wait_durable(journal.mark())
        where = await self.store.find_value(value)
        if self.audit is not None:
            await self.audit.record(operator.name, "control", str(value), network=network,
                                    network_uuid=str(network))
        return ControlOutcome(
            network=network, device=where.device if where else None, topic=reply.topic,
            data=doc["data"], timestamp=datetime.fromisoformat(doc["timestamp"]),
            device_online=self.online(network) or await self._online_elsewhere(network),
            correlation_id=correlation_id,
            response_topic=RESPONSE_TOPIC if correlation_id is not None else None)

    async def _online_elsewhere(self, network: UUID) -> bool:
        """In a cluster: whether the network has a live session on another node."""
        cluster = getattr(self.gateway, "peers", None)
        return cluster is not None and await cluster.online(network)

    async def erase(self, network: UUID, operator: Operator) -> EraseOutcome:
        now = datetime.now(UTC)
        known = (await self.store.connection_status(network) is not None
                 or await self.store.get_tree(network) is not None)
        if not known:
            return EraseOutcome(False, 0)
        # In the ledger first (a restored backup re-applies it), then the bar (a device
        # reconnecting during the erasure is refused at admission), then the rows.
        if self.ledger is not None:
            self.ledger.record(network, now)
        self.bars.bar(network, operator.name, now)
        closed = 0
        if self.gateway is not None:
            closed = await self._close_sessions(network)
            self._forget_broker_state(network)
            cluster = getattr(self.gateway, "peers", None)
            if cluster is not None:  # the other nodes cut the network's sessions too
                await cluster.erase(network)
            journal = getattr(self.gateway, "journal", None)
            if journal is not None:  # its journaled changes land before the erasure
                await journal.settle()
        entry = None if self.audit is None else self.audit.entry(
            operator.name, "erase", str(network), barred=network in self.bars,
            sessions_closed=closed)
        erased = await self.ingest.erase_network(network, entry)
        owner_codes = getattr(self.gateway, "owner_codes", None)
        if owner_codes is not None:  # the console's record of who may claim it, and who did
            await owner_codes.forget(str(network))
        if entry is not None and not erased:  # its rows went meanwhile: still an erasure
            await self.audit.record(operator.name, "erase", str(network), network=network,
                                    barred=network in self.bars, sessions_closed=closed)
        if self.gateway is not None:
            self.gateway.log.emit("erased", network=str(network), by=operator.name,
                                  sessions_closed=closed)
        return EraseOutcome(erased or known, closed)

    async def _close_sessions(self, network: UUID) -> int:
        live = self.gateway.connections.of_network(str(network))
        for connection in live:
            connection.close(DisconnectReason.ERASED, "network erased by an operator")
        # Their cleanup writes (disconnect status) must land before the erasure does.
        with trio.move_on_after(CLOSE_WAIT):
            for connection in live:
                await connection.finished.wait()
        return len(live)

    def _forget_broker_state(self, network: UUID) -> None:
        broker, net = self.gateway.broker, str(network)
        for message in broker.retained.matching(Jail(net).mount_filter("#")):
            broker.retained.clear(message.topic)
        for state in [s for s in broker.sessions.all() if s.key[0] == net]:
            for topic_filter in list(state.subscriptions):
                broker.unsubscribe(state, topic_filter)
            broker.sessions.delete(state.key)


def http_limits(config: Any) -> Any:
    """The API's `HttpLimits` from the gateway configuration (deadlines, pending pool)."""
    from .server import HttpLimits

    return HttpLimits(handshake_timeout=config.handshake_timeout,
                      unauthenticated_header_timeout=config.http_unauthenticated_head_timeout,
                      max_pending=config.max_pending,
                      max_pending_per_source=config.max_pending_per_source,
                      connection_rate=config.http_connection_rate,
                      connection_burst=config.http_connection_burst,
                      connection_rate_per_source=config.http_connection_rate_per_source,
                      connection_burst_per_source=config.http_connection_burst_per_source)


async def serve_gateway_http(gateway: Any, store: Any, stats: Any = None, *,
                             task_status: trio.TaskStatus[tuple[str, int]]
                             = trio.TASK_STATUS_IGNORED) -> None:
    """`serve_http` as `fleet-gateway serve` runs it, beside `serve_mqtt`, on one store.

    The bar list is the gateway's (`gateway.bars`, `<data>/barred.json`): what an erasure
    adds, MQTT admission consults. Listens on `gateway.config.http_address`; a bind failure
    is an `OSError` whose `filename` is that address (the CLI names it, exit 4).
    """
    from .metrics import gateway_samples
    from .server import HttpStatistics, serve_http

    config = gateway.config
    address = config.http_address
    assert address is not None
    bars = gateway.bars
    assert isinstance(bars, BarList), "serve the API of a gateway built with its bar list"
    limits = http_limits(config)
    stats = stats if stats is not None else HttpStatistics(limits, gateway.metrics.http)
    audit = AuditTrail(store, log=gateway.log, failures=gateway.metrics.http.audit_failures)
    # The erasure ledger is for restoring an SQLite backup; on PostgreSQL without a data
    # folder there is none unless `erasure_ledger` names one.
    ledger = (ErasureLedger(config.erasure_ledger_path)
              if config.data is not None or config.erasure_ledger is not None else None)
    hooks = GatewayHooks(store=store, ingest=gateway.ingest, gateway=gateway, bars=bars,
                         ledger=ledger, audit=audit)

    from gateway.console.wiring import console_for

    async with console_for(gateway) as console:
        await serve_http(address, http_tls(gateway.tls), store, hooks=hooks, bars=bars,
                         certificates=InventoryLookup(config.ca_home),
                         metrics=lambda: gateway_samples(gateway, store, gateway.ingest, stats),
                         limits=limits, log=gateway.log, stats=stats,
                         console=console, audit=audit, reuse_port=config.reuse_port,
                         task_status=task_status)
