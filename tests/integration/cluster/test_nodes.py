"""Cluster membership on a real PostgreSQL: heartbeat rows, duplicate names refused, a lapsed
node claimed by exactly one survivor and reaped, a node declared dead fenced, a clean stop
leaving no row. The clock is the test's (no waiting for a heartbeat to lapse)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import trio

from gateway.cluster.nodes import (
    ClusterView,
    Membership,
    NodeFenced,
    NodeNameInUse,
    ensure_schema,
    read_nodes,
    serve_node,
)

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
DEAD_AFTER = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Log:
    """An EventLog stand-in that keeps the records and wakes trio waiters."""

    def __init__(self) -> None:
        self.records: list[dict] = []
        self._changed = trio.Event()

    def emit(self, event: str, **fields) -> None:
        self.records.append({"event": event, **fields})
        self._changed.set()

    async def wait(self, event: str, **fields) -> dict:
        with trio.fail_after(20):
            while True:
                for r in self.records:
                    if r["event"] == event and all(r.get(k) == v for k, v in fields.items()):
                        return r
                self._changed = trio.Event()
                await self._changed.wait()


@pytest.fixture
def connect(postgres_url):
    def open_() -> psycopg.Connection:
        return psycopg.connect(postgres_url, autocommit=True)

    with open_() as conn:
        ensure_schema(conn)
    return open_


def member(connect, name: str, clock: Clock, **kw) -> Membership:
    return Membership(connect(), name, clock=clock, dead_after=DEAD_AFTER, **kw)


def rows(connect) -> dict[str, object]:
    with connect() as conn:
        return {r.name: r for r in read_nodes(conn)}


def test_a_node_joins_with_a_heartbeat_row_and_beats_with_its_connections(connect):
    clock = Clock()
    a = member(connect, "a", clock, host="h1", pid=101, version="1.2.3")
    assert a.join().previous is None
    row = rows(connect)["a"]
    assert (row.host, row.pid, row.started, row.heartbeat_at, row.version) == \
        ("h1", 101, T0, T0, "1.2.3")
    clock.advance(1)
    a.mqtt, a.http = "127.0.0.1:8883", "127.0.0.1:8443"
    a.beat(connections=42)
    row = rows(connect)["a"]
    assert (row.heartbeat_at, row.connections, row.mqtt, row.http) == \
        (T0 + timedelta(seconds=1), 42, "127.0.0.1:8883", "127.0.0.1:8443")
    assert row.state(clock(), DEAD_AFTER) == "alive"


def test_a_second_live_node_with_the_same_name_is_refused(connect):
    clock = Clock()
    member(connect, "a", clock, host="h1", pid=101).join()
    with pytest.raises(NodeNameInUse, match="'a' is in use by h1 pid 101"):
        member(connect, "a", clock, host="h2", pid=202).join()
    # Same host, and the first process still runs: refused too.
    with pytest.raises(NodeNameInUse):
        member(connect, "a", clock, host="h1", pid=303, pid_alive=lambda pid: True).join()
    assert rows(connect)["a"].pid == 101


def test_a_restarted_node_takes_over_its_dead_run_and_reaps_it_first(connect):
    clock = Clock()
    member(connect, "w-1", clock, host="h1", pid=101).join()
    # The same name on the same host whose pid is gone: a worker restarted after a crash,
    # within the heartbeat lapse.
    again = member(connect, "w-1", clock, host="h1", pid=102, pid_alive=lambda pid: False)
    assert again.join().previous == "w-1"
    assert rows(connect)["w-1"].pid == 102
    # Another host: only once the heartbeat lapsed.
    clock.advance(DEAD_AFTER + 1)
    third = member(connect, "w-1", clock, host="h2", pid=5)
    assert third.join().previous == "w-1"


def test_a_node_that_stopped_cleanly_leaves_no_row_and_its_name_is_free(connect):
    clock = Clock()
    a = member(connect, "a", clock)
    a.join()
    a.leave()
    assert "a" not in rows(connect)
    assert member(connect, "a", clock).join().previous is None


def test_a_lapsed_node_is_claimed_by_exactly_one_of_two_survivors_racing(connect):
    for round_ in range(10):
        clock = Clock()
        clock.advance(round_ * 3600)
        dead = member(connect, f"dead-{round_}", clock)
        dead.join()
        survivors = [member(connect, f"s{i}-{round_}", clock) for i in (1, 2)]
        for s in survivors:
            s.join()
        clock.advance(DEAD_AFTER + 1)
        for s in survivors:
            s.beat(connections=0)
        claims: list[list[str]] = [[], []]
        start = threading.Barrier(2)
        threads = [threading.Thread(target=_scan, args=(start, claims, i, s))
                   for i, s in enumerate(survivors)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(claims[0] + claims[1]) == [f"dead-{round_}"], claims
        winner = survivors[0] if claims[0] else survivors[1]
        row = rows(connect)[f"dead-{round_}"]
        assert (row.reaped_by, row.state(clock(), DEAD_AFTER)) == (winner.name, "dead")
        # Claimed once: later scans by either survivor find nothing more.
        assert survivors[0].claim_lapsed() + survivors[1].claim_lapsed() in (
            [f"dead-{round_}"], [])  # only the winner retries its own unfinished claim
        winner.reaped(f"dead-{round_}")
        assert survivors[0].claim_lapsed() + survivors[1].claim_lapsed() == []
        # The dead node's row gets reaped-only-once by every later scan, and the survivors'
        # rows are never claimed.
        for s in survivors:
            s.leave()


def _scan(start: threading.Barrier, claims: list, i: int, s: Membership) -> None:
    start.wait()
    claims[i] = s.claim_lapsed()


def test_a_claim_whose_claimer_died_is_claimed_again(connect):
    clock = Clock()
    dead, claimer, other = (member(connect, n, clock) for n in ("dead", "claimer", "other"))
    for m in (dead, claimer, other):
        m.join()
    clock.advance(DEAD_AFTER + 1)
    claimer.beat(0)
    other.beat(0)
    assert claimer.claim_lapsed() == ["dead"]
    assert other.claim_lapsed() == []  # the claimer is alive: its claim stands
    clock.advance(DEAD_AFTER + 1)  # the claimer dies before it marked the reap done
    other.beat(0)
    assert other.claim_lapsed() == ["claimer", "dead"]


def test_a_node_declared_dead_is_fenced_at_its_next_beat(connect):
    clock = Clock()
    slow, survivor = member(connect, "slow", clock), member(connect, "survivor", clock)
    slow.join()
    survivor.join()
    clock.advance(DEAD_AFTER + 1)
    survivor.beat(0)
    assert survivor.claim_lapsed() == ["slow"]
    with pytest.raises(NodeFenced, match="declared dead"):
        slow.beat(0)


def test_reaped_rows_are_forgotten_after_the_retention(connect):
    clock = Clock()
    dead, survivor = member(connect, "dead", clock), member(connect, "survivor", clock)
    dead.join()
    survivor.join()
    clock.advance(DEAD_AFTER + 1)
    survivor.beat(0)
    survivor.claim_lapsed()
    survivor.reaped("dead")
    assert survivor.forget_dead(60) == 0
    assert rows(connect)["dead"].state(clock(), DEAD_AFTER) == "reaped"
    clock.advance(61)
    assert survivor.forget_dead(60) == 1
    assert set(rows(connect)) == {"survivor"}


async def _serve(nursery, connect, name, clock, log, reap, view=None, connections=lambda: 0):
    return await nursery.start(lambda task_status: serve_node(
        connect, name, interval=0.01, dead_after=DEAD_AFTER, dead_retention=3600.0,
        reap=reap, connections=connections, log=log, view=view, version="t", clock=clock,
        task_status=task_status))


async def test_a_serving_node_reaps_a_lapsed_node_once_through_the_hook(connect):
    clock, log = Clock(), Log()
    crashed = member(connect, "crashed", clock)
    crashed.join()  # then never beats: killed
    reaped: list[str] = []
    done = trio.Event()

    async def reap(name: str) -> None:
        reaped.append(name)
        done.set()

    view = ClusterView(dead_after=DEAD_AFTER)
    async with trio.open_nursery() as nursery:
        membership = await _serve(nursery, connect, "survivor", clock, log, reap, view,
                                  connections=lambda: 7)
        membership.mqtt = "127.0.0.1:1883"
        clock.advance(DEAD_AFTER + 1)  # its own beats carry the new time; the crashed none
        await done.wait()
        await log.wait("node_reaped", dead="crashed")
        clock.advance(DEAD_AFTER + 1)
        # Wait for a later heartbeat of the survivor, then one more full scan.
        await _view_shows(view, lambda nodes: nodes["survivor"].heartbeat_at == clock())
        await _view_shows(view, lambda nodes: nodes["survivor"].heartbeat_at == clock())
        assert reaped == ["crashed"]
        nodes = {n.name: n for n in view.nodes}
        assert nodes["crashed"].state(clock(), DEAD_AFTER) == "reaped"
        assert (nodes["survivor"].connections, nodes["survivor"].mqtt) == (7, "127.0.0.1:1883")
        assert view.reaped == 1
        nursery.cancel_scope.cancel()
    # A clean stop took its row away.
    assert "survivor" not in rows(connect)
    assert log.records[-1]["event"] == "node_left"


async def _view_shows(view: ClusterView, predicate) -> None:
    with trio.fail_after(20):
        while not (view.nodes and predicate({n.name: n for n in view.nodes})):
            await trio.sleep(0.01)  # the view is polled state; the node beats every 0.01 s


async def test_serve_node_refuses_a_name_in_use(connect):
    clock, log = Clock(), Log()
    member(connect, "taken", clock, host="elsewhere").join()
    with pytest.raises(NodeNameInUse):
        await serve_node(connect, "taken", interval=0.01, dead_after=DEAD_AFTER,
                         dead_retention=3600.0, reap=lambda name: None, connections=lambda: 0,
                         log=log, clock=clock)


async def test_serve_node_stops_when_another_node_declared_it_dead(connect):
    clock, log = Clock(), Log()
    with pytest.raises(ExceptionGroup) as raised:
        async with trio.open_nursery() as nursery:
            await _serve(nursery, connect, "stalled", clock, log, lambda name: None)
            other = member(connect, "other", clock)
            other.join()
            # `stalled` is declared dead by `other` while its clock says it is on time.
            with connect() as conn:
                conn.execute("UPDATE cluster_nodes SET heartbeat_at = %s WHERE name = %s",
                             (T0 - timedelta(seconds=60), "stalled"))
                conn.execute("UPDATE cluster_nodes SET dead_at = %s, reaped_by = 'other' "
                             "WHERE name = 'stalled'", (T0,))
            await log.wait("node_fenced", node="stalled")
    assert raised.value.subgroup(NodeFenced) is not None
    # Fenced, not a clean stop: the row stays for its reaper.
    assert rows(connect)["stalled"].reaped_by == "other"


def test_the_view_knows_a_node_gone_by_its_row_its_heartbeat_or_its_pid(connect):
    import os
    import socket

    clock = Clock()
    here = member(connect, "here", clock, host=socket.gethostname(), pid=os.getpid())
    killed = member(connect, "killed", clock, host=socket.gethostname(), pid=2**22 + 7)
    remote = member(connect, "remote", clock, host="elsewhere", pid=1)
    for m in (here, killed, remote):
        m.join()
    with connect() as conn:
        view = ClusterView(dead_after=DEAD_AFTER, nodes=read_nodes(conn))
    assert not view.gone("here", clock())
    assert view.gone("killed", clock())  # same host, no such pid
    assert not view.gone("remote", clock())  # another host: only its heartbeat tells
    assert view.gone("remote", clock() + timedelta(seconds=DEAD_AFTER + 1))
    assert view.gone("never-joined", clock())
