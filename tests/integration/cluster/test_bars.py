"""Bars and erasure across nodes: an erasure through one node cuts the network's sessions
on the others and every node refuses it; a change whose NOTIFY was missed is seen once the
bus reconnects (resync)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
import trio
from clusterhelpers import start_node
from gwhelpers import WAIT, MQTTTestClient, PahoClient

from gateway.mqtt.packets import ConnAck, ConnectReturnCode


async def test_an_erasure_on_one_node_cuts_the_device_on_another(nursery, pki, postgres_url):
    a = await start_node(nursery, pki, postgres_url, "a")
    b = await start_node(nursery, pki, postgres_url, "b")
    creds = pki.device()
    network = uuid.UUID(creds.network)
    device = PahoClient(b.running, creds, "victim")
    assert (await device.connect())[1] == 0
    await b.logs.wait("connected", client_id="victim")
    with trio.fail_after(WAIT):  # its registry row says where it is
        while await _nodes(postgres_url, network) != {"b"}:
            await trio.sleep(0.02)
    a.cluster.bars.bar(network, "operator", datetime.now(UTC))
    assert await a.cluster.erase(network) == 1  # b answered
    line = await b.logs.wait("disconnected", client_id="victim")
    assert line["reason"] == "ERASED"
    assert network in b.cluster.bars
    assert await _nodes(postgres_url, network) == set()
    again = await MQTTTestClient.open(b.running, creds)
    # The bar is checked after the handshake: the refusal comes as a CONNACK.
    assert await again.connect("victim") == ConnAck(ConnectReturnCode.NOT_AUTHORIZED, False)
    await b.logs.wait("refused", cause="BARRED")
    await again.aclose()
    await device.close(graceful=False)


async def _nodes(url: str, network: uuid.UUID) -> set[str]:
    def read() -> set[str]:
        with psycopg.connect(url) as conn:
            return {r[0] for r in conn.execute(
                "SELECT node FROM cluster_sessions WHERE network = %s", (network,))}
    return await trio.to_thread.run_sync(read)


# The tests below kill the listeners they find by their last statement (LISTEN): no idle
# ping (SELECT 1), which a slow run could send first and so keep a listener alive.
QUIET = 3600.0


async def test_a_missed_notify_converges_after_the_bus_reconnects(nursery, pki, postgres_url):
    await start_node(nursery, pki, postgres_url, "a", ping_interval=QUIET)
    b = await start_node(nursery, pki, postgres_url, "b", ping_interval=QUIET)
    barred, watched = uuid.uuid4(), str(uuid.uuid4())
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        # Changes made without their NOTIFY (as if sent while b was not listening).
        conn.execute("INSERT INTO cluster_bars VALUES (%s, now(), 'operator')", (barred,))
        conn.execute("INSERT INTO cluster_interest VALUES (%s, 'c')", (watched,))
        assert barred not in b.cluster.bars and watched not in b.cluster.remote
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                     "datname = current_database() AND query LIKE 'LISTEN%%'")
    await b.logs.wait("cluster_bus_resumed", node="b")
    assert barred in b.cluster.bars
    assert b.cluster.remote[watched] == {"c"}
    assert b.cluster.metrics.resyncs.value == 2


async def test_retained_changes_missed_while_the_bus_was_down_are_read_from_the_store(
        nursery, pki, postgres_url):
    a = await start_node(nursery, pki, postgres_url, "a", store=True, ping_interval=QUIET)
    b = await start_node(nursery, pki, postgres_url, "b", store=True, ping_interval=QUIET)
    creds = pki.device()
    network = uuid.UUID(creds.network)
    device = PahoClient(a.running, creds, "lamp")
    assert (await device.connect())[1] == 0
    await device.publish("state/lamp", b"on", qos=1, retain=True)  # relayed to every node
    await device.publish("state/old", b"x", qos=1, retain=True)
    with trio.fail_after(WAIT):
        while b.cluster.metrics.relay_received.value < 2:
            await trio.sleep(0.01)
    # Changes whose NOTIFY b never got: straight into the store.
    await a.store.set_retained(network, "state/lamp", b"off", 1, datetime.now(UTC))
    await a.store.set_retained(network, "state/old", b"", 0, datetime.now(UTC))
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                     "datname = current_database() AND query LIKE 'LISTEN%%'")
    await b.logs.wait("cluster_retained_reloaded", node="b")
    reader = PahoClient(b.running, pki.device(network=network), "reader")
    assert (await reader.connect())[1] == 0
    await reader.subscribe("state/#", qos=1)
    got = await reader.message()
    assert (got.topic, got.payload, got.retain) == ("state/lamp", b"off", True)
    await reader.publish("state/marker", b"m", qos=1)
    assert (await reader.message()).payload == b"m"  # state/old is gone
    for client in (device, reader):
        await client.close()


async def test_a_crl_read_by_one_node_is_reloaded_by_the_others_at_once(
        nursery, pki, postgres_url):
    a = await start_node(nursery, pki, postgres_url, "a")
    # b never polls its CRL file in this test: only a's word can make it reload.
    b = await start_node(nursery, pki, postgres_url, "b", crl_poll_interval=3600)
    victim = pki.device()
    device = PahoClient(b.running, victim, "victim")
    assert (await device.connect())[1] == 0
    pki.home.revoke(victim.serial, reason="key-compromise")
    await a.logs.wait("crl_loaded", trigger="file_changed")
    await b.logs.wait("crl_loaded", trigger="cluster")
    line = await b.logs.wait("disconnected", client_id="victim")
    assert line["reason"] == "REVOKED"
    await device.close(graceful=False)


async def test_a_renewal_relayed_by_one_node_is_awaited_on_every_node(
        nursery, pki, postgres_url):
    a = await start_node(nursery, pki, postgres_url, "a")
    b = await start_node(nursery, pki, postgres_url, "b")
    renewed = pki.device()  # stands for the certificate a relayed a renewal for

    def awaiting(node) -> int:
        return node.gateway.provisioning.statistics()["renewals_awaiting_use"]

    a.cluster.renewed(renewed.serial, renewed.network)
    with trio.fail_after(WAIT):
        while awaiting(b) != 1:
            await trio.sleep(0.01)
    # Its first connection lands on b, which takes it as the first use.
    device = PahoClient(b.running, renewed, "renewed")
    assert (await device.connect())[1] == 0
    await b.logs.wait("connected", client_id="renewed")
    assert awaiting(b) == 0
    await device.close()
