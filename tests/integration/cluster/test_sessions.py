"""Sessions across nodes: a takeover closes the session on the node that had it, the
per-network session cap holds cluster-wide, a dead node's wills are published by `reap`,
and a killed bus connection resyncs what it may have missed."""

from __future__ import annotations

import uuid

import psycopg
import trio
from clusterhelpers import start_node
from gwhelpers import WAIT, PahoClient

from gateway.cluster import registry


async def test_the_same_client_id_on_another_node_takes_the_session_over(
        nursery, pki, postgres_url):
    a = await start_node(nursery, pki, postgres_url, "a")
    b = await start_node(nursery, pki, postgres_url, "b")
    creds = pki.device()
    first = PahoClient(a.running, creds, "sensor")
    assert (await first.connect())[1] == 0
    second = PahoClient(b.running, creds, "sensor")
    assert (await second.connect())[1] == 0
    line = await a.logs.wait("disconnected", client_id="sensor")
    assert line["reason"] == "DUPLICATE_CLIENTID"
    await a.logs.wait("cluster_session_handed_over", client_id="sensor", to="b")
    await trio.to_thread.run_sync(first.disconnected.wait, WAIT)
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT node, live FROM cluster_sessions WHERE client_id = "
                            "'sensor'").fetchall()
    assert rows == [("b", True)]  # a's end did not undo b's claim
    await second.close()


async def test_sessions_per_network_are_counted_cluster_wide(nursery, pki, postgres_url):
    a = await start_node(nursery, pki, postgres_url, "a", max_sessions_per_network=2)
    b = await start_node(nursery, pki, postgres_url, "b", max_sessions_per_network=2)
    network = uuid.uuid4()
    one = PahoClient(a.running, pki.device(network=network), "one")
    two = PahoClient(b.running, pki.device(network=network), "two")
    three = PahoClient(a.running, pki.device(network=network), "three")
    assert (await one.connect())[1] == 0
    assert (await two.connect())[1] == 0
    assert str((await three.connect())[1]) == "Server unavailable"  # the cap, on both nodes
    line = await a.logs.wait("disconnected", client_id="three")
    assert (line["reason"], line["detail"]) == ("THROTTLED", "max_sessions_per_network")
    assert a.cluster.metrics.sessions_refused.value == 1
    await two.close()
    await b.logs.wait("disconnected", client_id="two")
    with trio.fail_after(WAIT):  # its row goes with it (the writer is asynchronous)
        while await _sessions(postgres_url, network) != 1:
            await trio.sleep(0.02)
    again = PahoClient(a.running, pki.device(network=network), "three")
    assert (await again.connect())[1] == 0
    for client in (one, again):
        await client.close()


async def _sessions(url: str, network: uuid.UUID) -> int:
    def count() -> int:
        with psycopg.connect(url) as conn:
            return registry.sessions_of(network, conn)
    return await trio.to_thread.run_sync(count)


async def test_reap_publishes_the_wills_of_a_node_that_stopped_without_cleanup(
        nursery, pki, postgres_url):
    a = await start_node(nursery, pki, postgres_url, "a")
    ghost = await start_node(nursery, pki, postgres_url, "ghost")
    network = uuid.uuid4()
    watcher = PahoClient(a.running, pki.device(network=network), "watcher")
    assert (await watcher.connect())[1] == 0
    await watcher.subscribe("status/#", qos=1)
    doomed = PahoClient(ghost.running, pki.device(network=network), "doomed",
                        will=("status/doomed", b"gone", 1, False))
    assert (await doomed.connect())[1] == 0
    await ghost.logs.wait("connected", client_id="doomed")
    # The node stops without cleanup: its cluster tasks are cancelled with everything
    # else, so its registry rows stay as they were (live, with the will).
    ghost.scope.cancel()
    await ghost.logs.wait("disconnected", client_id="doomed")
    assert await a.cluster.reap("ghost") == 1
    will = await watcher.message()
    assert (will.topic, will.payload, will.qos) == ("status/doomed", b"gone", 1)
    await watcher.publish("status/marker", b"after", qos=1)
    assert (await watcher.message()).payload == b"after"  # the will came once
    assert await _sessions(postgres_url, network) == 1  # the watcher's only
    await a.logs.wait("cluster_reaped", dead_node="ghost", wills=1)
    await doomed.close(graceful=False)
    await watcher.close()


async def test_reap_takes_over_a_dead_nodes_persistent_session_with_its_queue(
        nursery, pki, postgres_url):
    a = await start_node(nursery, pki, postgres_url, "a", store=True)
    ghost = await start_node(nursery, pki, postgres_url, "ghost", store=True)
    network = uuid.uuid4()
    keeper_creds = pki.device(network=network)
    keeper = PahoClient(ghost.running, keeper_creds, "keeper", clean_session=False)
    assert (await keeper.connect())[1] == 0
    await keeper.subscribe("inbox/#", qos=1)
    await keeper.close()
    await ghost.logs.wait("disconnected", client_id="keeper")
    sender = PahoClient(ghost.running, pki.device(network=network), "sender")
    assert (await sender.connect())[1] == 0
    for i in range(3):
        await sender.publish("inbox/x", f"m{i}".encode(), qos=1)  # queued on ghost, stored
    ghost.scope.cancel()  # its registry rows stay: the cluster's writer stops with it
    await ghost.logs.wait("disconnected", client_id="sender")
    assert await a.cluster.reap("ghost") == 2  # the keeper, and the sender live at the end
    await sender.close(graceful=False)
    back = PahoClient(a.running, keeper_creds, "keeper", clean_session=False)
    flags, rc = await back.connect()
    assert rc == 0 and flags.session_present
    assert [(await back.message()).payload for _ in range(3)] == [b"m0", b"m1", b"m2"]
    await back.close()


async def test_a_device_back_before_its_dead_node_is_reaped_still_has_its_will_published(
        nursery, pki, postgres_url):
    """The device reconnects to another node first: the claim replaces the dead node's row
    (and the will in it), so the claiming node publishes that will once the dead node stays
    silent; the node table's word (`gone`) spares the CONNECT the wait."""
    a = await start_node(nursery, pki, postgres_url, "a", gone=lambda node: node == "ghost")
    ghost = await start_node(nursery, pki, postgres_url, "ghost")
    network = uuid.uuid4()
    watcher = PahoClient(a.running, pki.device(network=network), "watcher")
    assert (await watcher.connect())[1] == 0
    await watcher.subscribe("status/#", qos=1)
    creds = pki.device(network=network)
    doomed = PahoClient(ghost.running, creds, "dev", will=("status/dev", b"gone", 1, False))
    assert (await doomed.connect())[1] == 0
    await ghost.logs.wait("connected", client_id="dev")
    ghost.scope.cancel()  # dies: its row stays live, with the will
    await ghost.logs.wait("disconnected", client_id="dev")
    back = PahoClient(a.running, creds, "dev")
    assert (await back.connect())[1] == 0
    will = await watcher.message()
    assert (will.topic, will.payload) == ("status/dev", b"gone")
    await a.logs.wait("cluster_will_published", client_id="dev", dead_node="ghost")
    for client in (watcher, back):
        await client.close()
    await doomed.close(graceful=False)


async def test_a_node_restarted_under_its_name_holds_its_persistent_sessions_again(
        nursery, pki, postgres_url):
    a = await start_node(nursery, pki, postgres_url, "a", store=True)
    b = await start_node(nursery, pki, postgres_url, "b", store=True)
    network = uuid.uuid4()
    creds = pki.device(network=network)
    keeper = PahoClient(b.running, creds, "keeper", clean_session=False)
    assert (await keeper.connect())[1] == 0
    await keeper.subscribe("inbox/#", qos=1)
    await keeper.close()
    await b.logs.wait("disconnected", client_id="keeper")
    b.scope.cancel()
    b2 = await start_node(nursery, pki, postgres_url, "b", store=True)
    assert b2.gateway.broker.sessions.get((str(network), "keeper")) is not None
    assert (str(network), "keeper") not in {
        s.key for s in a.gateway.broker.sessions.all()}  # loaded by its owner only
    await a.knows_interest(str(network), of="b")  # its subscription, told again
    sender = PahoClient(a.running, pki.device(network=network), "sender")
    assert (await sender.connect())[1] == 0
    await sender.publish("inbox/x", b"queued by b", qos=1)
    await sender.close()
    back = PahoClient(b2.running, creds, "keeper", clean_session=False)
    flags, rc = await back.connect()
    assert rc == 0 and flags.session_present
    assert (await back.message()).payload == b"queued by b"
    await back.close()
