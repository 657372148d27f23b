"""Jail-mates on different nodes exchange messages both ways, once, in order, at the
granted QoS, and never across jails (real paho devices, two nodes, one PostgreSQL)."""

from __future__ import annotations

import uuid

import psycopg
from clusterhelpers import start_node
from gwhelpers import PahoClient


async def test_jail_mates_on_two_nodes_exchange_messages_once_in_order(
        nursery, pki, postgres_url):
    a = await start_node(nursery, pki, postgres_url, "a")
    b = await start_node(nursery, pki, postgres_url, "b")
    network = uuid.uuid4()
    on_a = PahoClient(a.running, pki.device(network=network), "on-a")
    on_b = PahoClient(b.running, pki.device(network=network), "on-b")
    stranger = PahoClient(b.running, pki.device(), "stranger")
    for client in (on_a, on_b, stranger):
        assert (await client.connect())[1] == 0
    await on_b.subscribe("chat/#", qos=1)
    await stranger.subscribe("#", qos=1)
    await a.knows_interest(str(network), of="b")
    for i in range(20):
        await on_a.publish("chat/a", f"a{i}".encode(), qos=1)
    got = [await on_b.message() for _ in range(20)]
    assert [m.payload for m in got] == [f"a{i}".encode() for i in range(20)]
    assert {(m.topic, m.qos) for m in got} == {("chat/a", 1)}
    # The other way round.
    await on_a.subscribe("talk/#", qos=0)
    await b.knows_interest(str(network), of="a")
    await on_b.publish("talk/b", b"hello a", qos=1)
    reply = await on_a.message()
    assert (reply.topic, reply.payload, reply.qos) == ("talk/b", b"hello a", 0)
    # A marker after everything: nothing more came (once), and the stranger saw nothing.
    await on_a.publish("chat/a", b"end", qos=1)
    assert (await on_b.message()).payload == b"end"
    assert on_b.messages.empty() and on_a.messages.empty()
    assert stranger.messages.empty()
    assert a.cluster.metrics.relay_sent.value == 21
    assert b.cluster.metrics.relay_received.value == 21
    for client in (on_a, on_b, stranger):
        await client.close()


async def test_no_relay_without_subscribers_on_another_node(nursery, pki, postgres_url):
    a = await start_node(nursery, pki, postgres_url, "a")
    await start_node(nursery, pki, postgres_url, "b")
    device = PahoClient(a.running, pki.device(), "alone")
    assert (await device.connect())[1] == 0
    for i in range(5):
        await device.publish("report/x", str(i).encode(), qos=1)
    assert a.cluster.metrics.relay_sent.value == 0
    await device.close()



async def test_a_burst_larger_than_max_queued_reaches_a_subscriber_on_another_node(
        nursery, pki, postgres_url):
    """3000 QoS 0 messages sent back to back arrive in order and the subscriber is not
    throttled (its outbox holds 1000): relayed batches are delivered as they come."""
    a = await start_node(nursery, pki, postgres_url, "a")
    b = await start_node(nursery, pki, postgres_url, "b")
    network = uuid.uuid4()
    pub = PahoClient(a.running, pki.device(network=network), "pub")
    sub = PahoClient(b.running, pki.device(network=network), "sub")
    for client in (pub, sub):
        assert (await client.connect())[1] == 0
    await sub.subscribe("burst/#", qos=0)
    await a.knows_interest(str(network), of="b")
    burst = 3000
    for i in range(burst):
        pub.client.publish("burst/x", b"%d" % i, 0)
    await pub.publish("burst/x", b"end", qos=1)
    got = [(await sub.message()).payload for _ in range(burst + 1)]
    assert got == [b"%d" % i for i in range(burst)] + [b"end"]
    assert not b.logs.find("disconnected", client_id="sub")
    for client in (pub, sub):
        await client.close()


async def test_the_relay_resumes_after_postgresql_ends_every_connection(
        nursery, pki, postgres_url):
    a = await start_node(nursery, pki, postgres_url, "a")
    b = await start_node(nursery, pki, postgres_url, "b")
    network = uuid.uuid4()
    pub = PahoClient(a.running, pki.device(network=network), "pub")
    sub = PahoClient(b.running, pki.device(network=network), "sub")
    for client in (pub, sub):
        assert (await client.connect())[1] == 0
    await sub.subscribe("x/#", qos=1)
    await a.knows_interest(str(network), of="b")
    await pub.publish("x/1", b"before", qos=1)
    assert (await sub.message()).payload == b"before"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        ended = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                             "datname = current_database() AND pid <> pg_backend_pid()"
                             ).fetchall()
    assert len(ended) >= 4  # both nodes' listeners and their lanes
    await a.logs.wait("cluster_bus_resumed", node="a")
    await b.logs.wait("cluster_bus_resumed", node="b")
    await pub.publish("x/2", b"after", qos=1)
    assert (await sub.message()).payload == b"after"
    for client in (pub, sub):
        await client.close()
