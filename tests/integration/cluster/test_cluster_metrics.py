"""/metrics of a real `fleet-gateway serve --store postgresql://...` node tells an operator
that PostgreSQL went away and came back: the store writer's reconnects, the bus's reconnects
and its resyncs (state re-read, since NOTIFYs may have been missed)."""

from __future__ import annotations

import http.client
import json
import ssl

import psycopg
import trio
from processes import WAIT, Device, NodeProcess, api
from prometheus_client.parser import text_string_to_metric_families

MODEL = {"devices": [{"name": "thermo", "values": [
    {"name": "target", "permission": "rw", "number": {"min": 5, "max": 30, "step": 0.5}}]}]}


def scrape(ca_home, address: tuple[str, int]) -> dict[str, float]:
    """The node's /metrics (operator certificate), sample name -> value (unlabelled ones)."""
    ctx = ssl.create_default_context(cafile=str(ca_home.path / "root.crt"))
    operator = ca_home.path / "operator"
    ctx.load_cert_chain(str(operator / "operator.crt"), str(operator / "operator.key"))
    conn = http.client.HTTPSConnection(*address, context=ctx, timeout=WAIT)
    try:
        conn.request("GET", "/metrics")
        answer = conn.getresponse()
        assert answer.status == 200
        text = answer.read().decode()
    finally:
        conn.close()
    return {s.name: s.value for family in text_string_to_metric_families(text)
            for s in family.samples if not s.labels}


def terminate_every_backend(url: str) -> int:
    """pg_terminate_backend on every other connection to the node's database."""
    with psycopg.connect(url, autocommit=True) as conn:
        return len(conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchall())


async def test_metrics_count_the_store_and_bus_reconnects_after_postgresql_lost_them(
        ca_home, postgres_url, make_device):
    node = NodeProcess(ca_home.path, postgres_url, "a")
    try:
        node.line("cluster_joined")
        http_at = node.address("http")
        bundle = make_device()
        device = Device(bundle, node.address("mqtt")[1], "thermo")

        def declare() -> None:
            assert device.connect()[1] == 0
            device.publish("model", json.dumps(MODEL).encode())  # acknowledged once stored

        await trio.to_thread.run_sync(declare)
        status, doc = await trio.to_thread.run_sync(
            api, ca_home, http_at, "GET", f"/api/v1/networks/{bundle.network_uuid}")
        assert status == 200, doc
        target = doc["network"]["devices"][0]["values"][0]["uuid"]
        before = await trio.to_thread.run_sync(scrape, ca_home, http_at)
        assert before["fleetgate_store_reconnects_total"] == 0
        assert before["fleetgate_cluster_bus_reconnects_total"] == 0
        assert before["fleetgate_cluster_resyncs_total"] == 1

        assert await trio.to_thread.run_sync(terminate_every_backend, postgres_url) >= 2
        node.line("cluster_bus_lost")
        node.line("cluster_bus_resumed")
        # The write on the lost connection fails unacknowledged; the next one reconnects.
        answers = []
        for _ in range(5):
            status, doc = await trio.to_thread.run_sync(
                api, ca_home, http_at, "POST", f"/api/v1/values/{target}/control",
                {"data": 21.5})
            answers.append(status)
            if status == 200:
                break
        assert answers[-1] == 200, answers
        after = await trio.to_thread.run_sync(scrape, ca_home, http_at)
        assert after["fleetgate_store_reconnects_total"] == 1
        # The listener, and the resync's query connection (found lost by its first query):
        # each loss is one more reconnect; each resync that completed counts once.
        assert after["fleetgate_cluster_bus_reconnects_total"] >= 1
        assert after["fleetgate_cluster_resyncs_total"] >= 2
        await trio.to_thread.run_sync(device.close)
    finally:
        assert node.stop() == 0
