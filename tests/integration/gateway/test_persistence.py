"""Nothing acknowledged is lost across a gateway restart: retained messages,
persistent sessions' subscriptions and the QoS 1/2 messages queued for them are in the store.

The gateway runs in-process on a real SQLite data folder and is stopped and started again on
it; the SIGKILL test runs the real `fleet-gateway serve --data` process.
"""

from __future__ import annotations

import io
import signal
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio
from gwhelpers import LogRecords, MQTTTestClient, Running
from test_cli import GatewayProcess, _running

from gateway.app import Gateway, load_mqtt_state
from gateway.config import load_config
from gateway.http.wiring import GatewayHooks
from gateway.ingest import Ingest
from gateway.logs import EventLog
from gateway.mqtt.packets import (
    ConnAck,
    ConnectReturnCode,
    Disconnect,
    PubAck,
    Publish,
    QoS,
    SubAck,
    Subscribe,
)
from gateway.server import serve_mqtt
from gateway.storage import DB_NAME, SQLiteStore, open_sqlite_store

ACCEPTED = ConnectReturnCode.ACCEPTED


@dataclass
class Durable:
    running: Running
    store: SQLiteStore


@asynccontextmanager
async def durable_gateway(pki, data: Path) -> AsyncIterator[Durable]:
    """The gateway as `fleet-gateway serve --data` wires it, stopped on exit like SIGTERM
    stops it (sessions closed, then the broker's journal flushed, then the store closed)."""
    config = load_config(None, {"ca_home": pki.path, "mqtt": "127.0.0.1:0", "data": data})
    logs = LogRecords()
    log = EventLog(io.StringIO(), truncate_ips=config.truncate_ip)
    log.add_listener(logs)
    async with open_sqlite_store(data) as store:
        broker, journal = await load_mqtt_state(config, store, log)
        gateway = Gateway(config, log=log, ingest=Ingest(store), status=store, broker=broker,
                          journal=journal)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(gateway.journal.run)
                host, port = await nursery.start(serve_mqtt, gateway)
                try:
                    yield Durable(Running(gateway, host, port, logs), store)
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            await gateway.journal.flush()


async def _connect(running: Running, creds, client_id: str, *, clean: bool = True,
                   present: bool = False) -> MQTTTestClient:
    client = await MQTTTestClient.open(running, creds)
    assert await client.connect(client_id, clean_session=clean) == ConnAck(ACCEPTED, present)
    return client


async def _leave(client: MQTTTestClient, running: Running, client_id: str) -> None:
    """DISCONNECT, and wait until the gateway has taken the session offline."""
    await client.send(Disconnect())
    await running.logs.wait("disconnected", client_id=client_id)
    await client.aclose()


async def _publish_acked(client: MQTTTestClient, topic: str, payload: bytes, packet_id: int,
                         *, retain: bool = False) -> None:
    await client.send(Publish(topic, payload, QoS.AT_LEAST_ONCE, retain, packet_id=packet_id))
    assert await client.receive() == PubAck(packet_id)


def _rows(data: Path, table: str) -> int:
    db = sqlite3.connect(data / DB_NAME)
    try:
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        db.close()


async def test_a_retained_message_survives_a_restart_and_its_clearing_too(pki, net_a,
                                                                          tmp_path):
    data = tmp_path / "data"
    async with durable_gateway(pki, data) as gw:
        pub = await _connect(gw.running, net_a, "pub")
        await _publish_acked(pub, "state/lamp", b"on", 1, retain=True)
        await _publish_acked(pub, "state/fan", b"fast", 2, retain=True)
        # Acknowledged means stored: the row is there before any restart.
        assert _rows(data, "retained") == 2
        await _publish_acked(pub, "state/fan", b"", 3, retain=True)  # clears it
        await pub.aclose()
    async with durable_gateway(pki, data) as gw:
        sub = await _connect(gw.running, net_a, "sub")
        await sub.send(Subscribe(1, (("state/#", QoS.AT_LEAST_ONCE),)))
        assert await sub.receive() == SubAck(1, (1,))
        got = await sub.receive()
        assert (got.topic, got.payload, got.retain) == ("state/lamp", b"on", True)
        # The cleared one did not come back: the next message is a fresh publish.
        await sub.send(Publish("state/marker", b"m"))
        marker = await sub.receive()
        assert (marker.topic, marker.retain) == ("state/marker", False)
        await sub.aclose()


async def test_a_persistent_session_keeps_its_subscriptions_and_queue_across_a_restart(
        pki, net_a, net_a2, tmp_path):
    data = tmp_path / "data"
    async with durable_gateway(pki, data) as gw:
        sub = await _connect(gw.running, net_a, "keeper", clean=False)
        await sub.send(Subscribe(1, (("cmd/#", QoS.AT_LEAST_ONCE),)))
        assert await sub.receive() == SubAck(1, (1,))
        assert _rows(data, "subscriptions") == 1  # stored before the SUBACK
        await _leave(sub, gw.running, "keeper")
        pub = await _connect(gw.running, net_a2, "pub")
        for i in range(3):
            await _publish_acked(pub, f"cmd/{i}", f"m{i}".encode(), i + 1)
        assert _rows(data, "queued_refs") == 3  # stored before the PUBACKs
        await pub.aclose()
    async with durable_gateway(pki, data) as gw:
        sub = await _connect(gw.running, net_a, "keeper", clean=False, present=True)
        for i in range(3):
            got = await sub.receive()
            assert (got.topic, got.payload, got.qos) == (f"cmd/{i}", f"m{i}".encode(), 1)
            await sub.send(PubAck(got.packet_id))
        # The subscription still routes new messages.
        pub = await _connect(gw.running, net_a2, "pub")
        await _publish_acked(pub, "cmd/new", b"new", 9)
        got = await sub.receive()
        assert (got.topic, got.payload) == ("cmd/new", b"new")
        await sub.send(PubAck(got.packet_id))
        await _leave(sub, gw.running, "keeper")
        await pub.aclose()
    assert _rows(data, "queued_refs") == 0  # delivered and acknowledged: dequeued
    async with durable_gateway(pki, data) as gw:
        # Exactly once: nothing comes again after another restart.
        sub = await _connect(gw.running, net_a, "keeper", clean=False, present=True)
        await sub.send(Publish("cmd/marker", b"marker", QoS.AT_LEAST_ONCE, packet_id=5))
        first = await sub.receive()
        second = await sub.receive()
        assert {type(first), type(second)} == {PubAck, Publish}
        echoed = first if isinstance(first, Publish) else second
        assert echoed.payload == b"marker"
        await sub.aclose()


async def test_clean_sessions_leave_nothing_in_the_store(pki, net_a, net_a2, tmp_path):
    data = tmp_path / "data"
    async with durable_gateway(pki, data) as gw:
        clean = await _connect(gw.running, net_a, "passing")
        await clean.send(Subscribe(1, (("x/#", QoS.AT_LEAST_ONCE),)))
        assert await clean.receive() == SubAck(1, (1,))
        kept = await _connect(gw.running, net_a2, "was-kept", clean=False)
        await kept.send(Subscribe(1, (("y/#", QoS.AT_LEAST_ONCE),)))
        assert await kept.receive() == SubAck(1, (1,))
        await _leave(kept, gw.running, "was-kept")
        await gw.running.gateway.journal.settle()
        assert _rows(data, "subscriptions") == 1
        # A clean_session=1 CONNECT discards the persistent session (MQTT-3.1.2-6) and
        # its rows.
        again = await _connect(gw.running, net_a2, "was-kept", clean=True)
        await _leave(again, gw.running, "was-kept")
        await _leave(clean, gw.running, "passing")
    for table in ("sessions", "subscriptions", "queued_refs", "queued_messages", "retained"):
        assert _rows(data, table) == 0, table


async def test_qos0_and_messages_to_live_subscribers_add_no_store_write(pki, net_a, net_a2,
                                                                        tmp_path):
    async with durable_gateway(pki, tmp_path / "data") as gw:
        journal = gw.running.gateway.journal
        sub = await _connect(gw.running, net_a, "live", clean=False)
        await sub.send(Subscribe(1, (("t/#", QoS.AT_LEAST_ONCE),)))
        assert await sub.receive() == SubAck(1, (1,))
        await journal.settle()
        before = journal.mark()
        pub = await _connect(gw.running, net_a2, "pub")
        await pub.send(Publish("t/zero", b"0"))
        await _publish_acked(pub, "t/one", b"1", 1)
        for _ in range(2):
            got = await sub.receive()
            if got.qos:
                await sub.send(PubAck(got.packet_id))
        assert journal.mark() == before
        await sub.aclose()
        await pub.aclose()


async def test_a_control_command_for_an_offline_device_survives_a_restart(
        pki, net_a, tmp_path):
    data = tmp_path / "data"
    network = uuid.UUID(net_a.network)
    model = (b'{"devices": [{"name": "lamp", "values": [{"name": "on", "permission": "rw",'
             b' "number": {"min": 0, "max": 1, "step": 1}}]}]}')
    async with durable_gateway(pki, data) as gw:
        dev = await _connect(gw.running, net_a, "lamp", clean=False)
        await dev.send(Subscribe(1, (("control/#", QoS.AT_LEAST_ONCE),)))
        assert await dev.receive() == SubAck(1, (1,))
        await _publish_acked(dev, "model", model, 2)
        await _leave(dev, gw.running, "lamp")
        tree = await gw.store.get_tree(network)
        value = tree.devices[0].values[0].uuid
        hooks = GatewayHooks(store=gw.store, ingest=gw.running.gateway.ingest,
                             gateway=gw.running.gateway)
        outcome = await hooks.control(value, 1, operator=None)
        assert outcome.device_online is False
    async with durable_gateway(pki, data) as gw:
        dev = await _connect(gw.running, net_a, "lamp", clean=False, present=True)
        # The session's queued copy of the command (the subscription predates it).
        got = await dev.receive()
        assert got.topic == "control/lamp/on" and b'"data"' in got.payload
        await dev.send(PubAck(got.packet_id))
        await dev.aclose()


async def test_erasing_a_network_removes_its_retained_sessions_and_queue(
        pki, net_a, net_b, tmp_path):
    data = tmp_path / "data"
    async with durable_gateway(pki, data) as gw:
        for creds, name in ((net_a, "victim"), (net_b, "other")):
            dev = await _connect(gw.running, creds, name, clean=False)
            await dev.send(Subscribe(1, (("q/#", QoS.AT_LEAST_ONCE),)))
            assert await dev.receive() == SubAck(1, (1,))
            await _leave(dev, gw.running, name)
            pub = await _connect(gw.running, creds, f"{name}-pub")
            await _publish_acked(pub, "q/kept", b"queued", 1)
            await _publish_acked(pub, "r", b"retained", 2, retain=True)
            await pub.aclose()
        assert (_rows(data, "queued_refs"), _rows(data, "retained")) == (2, 2)

        class Operator:
            name = "test-operator"

        hooks = GatewayHooks(store=gw.store, ingest=gw.running.gateway.ingest,
                             gateway=gw.running.gateway)
        erased = await hooks.erase(uuid.UUID(net_a.network), Operator())
        assert erased.erased
    for table in ("sessions", "subscriptions", "queued_refs", "queued_messages", "retained"):
        assert _rows(data, table) == 1, table  # the other network's only
    db = sqlite3.connect(data / DB_NAME)
    assert db.execute("SELECT count(*) FROM networks WHERE uuid = ?",
                      (net_a.network,)).fetchone() == (0,)
    db.close()


async def test_a_message_queued_for_an_offline_session_survives_a_sigkill_right_after_puback(
        pki, net_a, net_a2, tmp_path):
    data = tmp_path / "data"
    args = ("--ca-home", str(pki.path), "--mqtt", "127.0.0.1:0", "--http", "off",
            "--data", str(data))  # never the default HTTPS port: another process may hold it
    process = GatewayProcess(*args)
    try:
        running = _running(await process.await_line("listening"))
        sub = await _connect(running, net_a, "sleeper", clean=False)
        await sub.send(Subscribe(1, (("wake/#", QoS.AT_LEAST_ONCE),)))
        assert await sub.receive() == SubAck(1, (1,))
        await sub.send(Disconnect())
        await process.await_line("disconnected", client_id="sleeper")
        await sub.aclose()
        pub = await _connect(running, net_a2, "waker")
        await _publish_acked(pub, "wake/up", b"now", 1)
        process.proc.send_signal(signal.SIGKILL)  # at once: no chance to flush anything
        await trio.to_thread.run_sync(process.proc.wait)
        assert process.proc.returncode == -signal.SIGKILL
        await pub.aclose()
    finally:
        process.stop()
    process = GatewayProcess(*args)
    try:
        running = _running(await process.await_line("listening"))
        sub = await _connect(running, net_a, "sleeper", clean=False, present=True)
        got = await sub.receive()
        assert (got.topic, got.payload, got.qos) == ("wake/up", b"now", 1)
        await sub.send(PubAck(got.packet_id))
        await sub.aclose()
    finally:
        process.stop()


async def test_a_message_sent_but_not_acknowledged_comes_again_after_a_clean_restart(
        pki, net_a, net_a2, tmp_path):
    data = tmp_path / "data"
    async with durable_gateway(pki, data) as gw:
        sub = await _connect(gw.running, net_a, "slow", clean=False)
        await sub.send(Subscribe(1, (("n/#", QoS.AT_LEAST_ONCE),)))
        assert await sub.receive() == SubAck(1, (1,))
        pub = await _connect(gw.running, net_a2, "pub")
        await _publish_acked(pub, "n/1", b"unacked", 1)
        got = await sub.receive()
        assert got.payload == b"unacked"  # and no PUBACK from us
        await pub.aclose()
    # The stop closed the session with its message inflight: stored, not dropped.
    async with durable_gateway(pki, data) as gw:
        sub = await _connect(gw.running, net_a, "slow", clean=False, present=True)
        again = await sub.receive()
        assert (again.topic, again.payload, again.qos) == ("n/1", b"unacked", 1)
        await sub.send(PubAck(again.packet_id))
        await _leave(sub, gw.running, "slow")
    assert _rows(data, "queued_refs") == 0


async def test_a_message_queued_for_many_sessions_is_stored_once_and_reaches_each(
        pki, net_a, net_a2, tmp_path):
    data = tmp_path / "data"
    clients = [f"keeper-{i}" for i in range(5)]
    async with durable_gateway(pki, data) as gw:
        for client_id in clients:
            sub = await _connect(gw.running, net_a, client_id, clean=False)
            await sub.send(Subscribe(1, (("cmd/#", QoS.AT_LEAST_ONCE),)))
            assert await sub.receive() == SubAck(1, (1,))
            await _leave(sub, gw.running, client_id)
        pub = await _connect(gw.running, net_a2, "pub")
        await _publish_acked(pub, "cmd/big", b"B" * 50_000, 1)
        await _publish_acked(pub, "cmd/small", b"s", 2)
        # Stored before the PUBACKs: one payload row per message, one reference per session.
        assert (_rows(data, "queued_messages"), _rows(data, "queued_refs")) == (2, 10)
        await pub.aclose()
    async with durable_gateway(pki, data) as gw:
        broker = gw.running.gateway.broker
        network = net_a.network
        # Start-up read the queue sizes, not the messages.
        state = broker.sessions.get((network, clients[0]))
        assert (len(state.outbox), state.stored, state.queued_bytes) == (0, 2, 50_001)
        assert broker.queued_bytes(network) == 5 * 50_001
        pub = await _connect(gw.running, net_a2, "pub")
        await _publish_acked(pub, "cmd/after", b"a", 3)  # queued since the restart: last
        for n, client_id in enumerate(clients):
            sub = await _connect(gw.running, net_a, client_id, clean=False, present=True)
            for topic, payload in (("cmd/big", b"B" * 50_000), ("cmd/small", b"s"),
                                   ("cmd/after", b"a")):
                got = await sub.receive()
                assert (got.topic, got.payload, got.qos) == (topic, payload, 1), client_id
                await sub.send(PubAck(got.packet_id))
            await _leave(sub, gw.running, client_id)
            await gw.running.gateway.journal.settle()
            if n < len(clients) - 1:  # the others still hold them
                assert _rows(data, "queued_messages") == 3
        assert broker.queued_bytes(network) == 0
        await pub.aclose()
    # The last reference took each message row with it.
    assert (_rows(data, "queued_messages"), _rows(data, "queued_refs")) == (0, 0)


async def test_latency_histograms_count_each_admission_and_each_stored_acknowledgement(
        pki, net_a, tmp_path):
    async with durable_gateway(pki, tmp_path / "data") as gw:
        latency = gw.running.gateway.metrics.latency
        client = await _connect(gw.running, net_a, "timed")
        assert latency.handshake.count == 1
        await _publish_acked(client, "t/1", b"x", 1)
        await _publish_acked(client, "t/2", b"y", 2)
        assert latency.publish_ack.count == 2  # one per acknowledged QoS 1 PUBLISH
        assert latency.publish_ack.buckets()[-1] == ("+Inf", 2)
        await client.aclose()
