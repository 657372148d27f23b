"""The cluster bus on a real PostgreSQL: NOTIFY between two nodes, in order, once; large
bodies through their table; a killed LISTEN connection comes back and resyncs."""

from __future__ import annotations

import io
from functools import partial

import psycopg
import trio

from gateway.cluster.bus import CONTROL, RELAY, Bus, PgLane
from gateway.cluster.schema import MIGRATIONS, migrate
from gateway.logs import EventLog
from gateway.metrics import ClusterMetrics

WAIT = 20.0


class Node:
    """A bus with recording handlers."""

    def __init__(self, url: str, name: str, relay=None) -> None:
        self.got: list[tuple[str, str, str]] = []
        self.resyncs = 0
        self.changed = trio.Event()
        self.logs: list[dict] = []
        log = EventLog(io.StringIO())
        log.add_listener(self.logs.append)
        self.metrics = ClusterMetrics()
        self.bus = Bus(url, name, handlers={RELAY: relay or partial(self._on, RELAY),
                                            CONTROL: partial(self._on, CONTROL)},
                       resync=self._resync, metrics=self.metrics, log=log,
                       # no idle ping: the kill below finds each listener by its last
                       # statement (LISTEN), which a ping on a slow run would replace
                       backoff=(0.05, 0.2), ping_interval=3600.0)

    async def _on(self, channel: str, origin: str, body: str) -> None:
        self.got.append((channel, origin, body))
        self.changed.set()

    async def _resync(self) -> None:
        self.resyncs += 1
        self.changed.set()

    async def wait(self, predicate) -> None:
        with trio.fail_after(WAIT):
            while not predicate():
                self.changed = trio.Event()
                await self.changed.wait()


def _migrated(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        assert migrate(conn) == MIGRATIONS[-1][0]
        assert migrate(conn) == MIGRATIONS[-1][0]  # idempotent


async def test_notifies_reach_the_other_node_in_order_once_and_not_the_sender(
        postgres_url, nursery):
    _migrated(postgres_url)
    a, b = Node(postgres_url, "a"), Node(postgres_url, "b")
    await nursery.start(a.bus.serve)
    await nursery.start(b.bus.serve)
    for i in range(300):
        a.bus.send(RELAY, f"m{i}")
    a.bus.send(CONTROL, "same")
    a.bus.send(CONTROL, "same")  # identical bodies are not folded
    await a.bus.flush()
    await b.wait(lambda: len(b.got) == 302)
    assert [body for _, _, body in b.got[:300]] == [f"m{i}" for i in range(300)]
    assert b.got[300:] == [(CONTROL, "a", "same")] * 2
    assert a.got == []
    assert b.metrics.relay_gaps.value == 0


async def test_a_body_past_the_notify_limit_goes_through_its_table(postgres_url, nursery):
    _migrated(postgres_url)
    a, b = Node(postgres_url, "a"), Node(postgres_url, "b")
    await nursery.start(a.bus.serve)
    await nursery.start(b.bus.serve)
    big = "x" * 50_000
    a.bus.send(RELAY, "before")
    a.bus.send(RELAY, big)
    a.bus.send(RELAY, "after")
    await b.wait(lambda: len(b.got) == 3)
    assert [body for _, _, body in b.got] == ["before", big, "after"]
    assert a.metrics.large_bodies.value == 1


async def test_a_killed_listen_connection_reconnects_and_resyncs(postgres_url, nursery):
    _migrated(postgres_url)
    a, b = Node(postgres_url, "a"), Node(postgres_url, "b")
    await nursery.start(a.bus.serve)
    await nursery.start(b.bus.serve)
    assert b.resyncs == 1
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE "
            "'LISTEN%%' AND datname = current_database()").fetchall()
    assert len(killed) == 2  # both nodes' listeners
    await b.wait(lambda: b.resyncs == 2)
    await a.wait(lambda: a.resyncs == 2)
    assert b.metrics.reconnects.value == 1
    assert any(r["event"] == "cluster_bus_lost" for r in b.logs)
    a.bus.send(CONTROL, "after the reconnect")
    await b.wait(lambda: b.got)
    assert b.got == [(CONTROL, "a", "after the reconnect")]


async def test_a_note_no_node_wrote_is_logged_and_the_bus_goes_on(postgres_url, nursery):
    _migrated(postgres_url)

    async def broken(origin: str, body: str) -> None:
        if body == "bad":
            raise KeyError("k")
        await b._on(RELAY, origin, body)

    a, b = Node(postgres_url, "a"), Node(postgres_url, "b", relay=broken)
    await nursery.start(a.bus.serve)
    await nursery.start(b.bus.serve)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("NOTIFY fleetgate_relay, 'no frame at all'")  # ignored: not framed
    a.bus.send(RELAY, "bad")
    a.bus.send(RELAY, "good")
    await b.wait(lambda: b.got)
    assert b.got == [(RELAY, "a", "good")]
    assert [r["event"] for r in b.logs if r["event"].startswith("cluster_handler")] == [
        "cluster_handler_failed"]


async def test_a_lane_whose_connection_the_server_ended_runs_its_next_call_on_a_new_one(
        postgres_url):
    lane = PgLane(postgres_url)

    def backend_pid(conn: psycopg.Connection) -> int:
        return conn.execute("SELECT pg_backend_pid()").fetchone()[0]

    try:
        first = await lane.run(backend_pid)
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            # What a restart or a failover does to an idle connection (waits for the end).
            assert conn.execute("SELECT pg_terminate_backend(%s, 10000)", (first,)
                                ).fetchone() == (True,)
        assert await lane.run(backend_pid) != first  # not ClusterUnavailable once first
    finally:
        lane.close()
