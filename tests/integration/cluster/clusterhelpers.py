"""Cluster test helpers: one gateway node in-process (`start_node`), routing only (no store)
or on the PostgreSQL store (`store=True`), wired as `run_gateway` wires a node."""

from __future__ import annotations

import io
from dataclasses import dataclass

import trio
from gwhelpers import WAIT, LogRecords, Running

from gateway.app import Gateway, load_mqtt_state
from gateway.broker import Broker
from gateway.cluster import Cluster
from gateway.config import load_config
from gateway.ingest import Ingest
from gateway.logs import EventLog
from gateway.metrics import GatewayMetrics
from gateway.server import serve_mqtt
from gateway.storage.postgres import open_postgres_store


@dataclass
class Node:
    name: str
    running: Running
    cluster: Cluster
    scope: trio.CancelScope
    store: object = None

    @property
    def gateway(self) -> Gateway:
        return self.running.gateway

    @property
    def logs(self) -> LogRecords:
        return self.running.logs

    async def knows_interest(self, network: str, of: str) -> None:
        """Wait until this node knows node `of` has subscribers in `network`."""
        with trio.fail_after(WAIT):
            while of not in self.cluster.remote.get(network, ()):
                await trio.sleep(0.01)


async def start_node(nursery: trio.Nursery, pki, url: str, name: str, *, store: bool = False,
                     gone=None, ping_interval: float | None = None, **overrides) -> Node:
    """A node joined to the cluster on `url`: routing only, or with `store` the PostgreSQL
    store there (ingest, the broker's durable state, as `run_gateway` wires it).
    `ping_interval`: the bus's idle ping (a test that finds the listener by its LISTEN
    statement in pg_stat_activity needs none: a ping replaces that statement)."""
    config = load_config(None, {"ca_home": pki.path, "mqtt": "127.0.0.1:0",
                                **({"store": url} if store else {}), **overrides})
    logs = LogRecords()
    log = EventLog(io.StringIO(), truncate_ips=config.truncate_ip)
    log.add_listener(logs)
    metrics = GatewayMetrics()
    scope = trio.CancelScope()

    async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            # Named here: two nodes share this process (run_gateway: `open_cluster`).
            cluster = Cluster(url, name, metrics=metrics.cluster, log=log,
                              max_sessions_per_network=config.max_sessions_per_network,
                              gone=gone)
            if ping_interval is not None:
                cluster.bus.ping_interval = ping_interval
            if not store:
                await cluster.prepare(None)
                broker = Broker(max_queued=config.max_queued,
                                max_sessions_per_network=config.max_sessions_per_network,
                                peer=cluster)
                gateway = Gateway(config, log=log, broker=broker, bars=cluster.bars,
                                  metrics=metrics, peers=cluster)
                await serve(gateway, cluster, None, task_status)
                return
            async with open_postgres_store(url) as pg:
                owned = await cluster.prepare(pg)
                broker, journal = await load_mqtt_state(config, pg, log, peer=cluster,
                                                        owned=owned)
                gateway = Gateway(config, log=log, ingest=Ingest(pg), status=pg,
                                  broker=broker, journal=journal, bars=cluster.bars,
                                  metrics=metrics, peers=cluster)
                try:
                    await serve(gateway, cluster, pg, task_status)
                finally:
                    await journal.flush()

    async def serve(gateway, cluster, pg, task_status) -> None:
        async with trio.open_nursery() as inner:
            if gateway.journal is not None:
                await inner.start(gateway.journal.run)
            await inner.start(cluster.serve, gateway, pg)
            host, port = await inner.start(serve_mqtt, gateway)
            task_status.started((Running(gateway, host, port, logs), cluster, pg))

    running, cluster, pg = await nursery.start(run)
    return Node(name, running, cluster, scope, pg)
