"""Cluster test helpers: one gateway node in-process (`start_node`), routing only (no store)
or on the PostgreSQL store, wired as `run_gateway` wires a node."""

from __future__ import annotations

import io
from dataclasses import dataclass

import trio
from gwhelpers import WAIT, LogRecords, Running

from gateway.app import Gateway
from gateway.broker import Broker
from gateway.cluster import Cluster
from gateway.config import load_config
from gateway.logs import EventLog
from gateway.metrics import GatewayMetrics
from gateway.server import serve_mqtt


@dataclass
class Node:
    name: str
    running: Running
    cluster: Cluster
    scope: trio.CancelScope

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


async def start_node(nursery: trio.Nursery, pki, url: str, name: str, **overrides) -> Node:
    """A routing-only node (`--store` unset) joined to the cluster on `url`."""
    config = load_config(None, {"ca_home": pki.path, "mqtt": "127.0.0.1:0", **overrides})
    logs = LogRecords()
    log = EventLog(io.StringIO(), truncate_ips=config.truncate_ip)
    log.add_listener(logs)
    metrics = GatewayMetrics()
    cluster = Cluster(url, name, metrics=metrics.cluster, log=log,
                      max_sessions_per_network=config.max_sessions_per_network)
    await cluster.prepare(None)
    broker = Broker(max_queued=config.max_queued,
                    max_sessions_per_network=config.max_sessions_per_network, peer=cluster)
    gateway = Gateway(config, log=log, broker=broker, bars=cluster.bars, metrics=metrics,
                      peers=cluster)
    scope = trio.CancelScope()

    async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            async with trio.open_nursery() as inner:
                await inner.start(cluster.serve, gateway)
                host, port = await inner.start(serve_mqtt, gateway)
                task_status.started(Running(gateway, host, port, logs))

    running = await nursery.start(run)
    return Node(name, running, cluster, scope)
