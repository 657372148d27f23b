"""Cluster membership: each gateway node's heartbeat row, and dead nodes reaped exactly once.

Theory of operation. Every node of a cluster (a gateway process on the shared PostgreSQL)
owns one row of `cluster_nodes`, keyed by its name (`--node`, default `<host>-<pid>`) and
stamped with an incarnation id drawn at start:

- `join` inserts the row, refusing a name that a live node holds (`NodeNameInUse`). A row of
  the same name whose process is gone (its heartbeat lapsed, or its pid no longer runs on
  this host: a worker restarted by `--workers`) is the node's previous run: the new run takes
  the row over and reaps that run itself before it serves (`Joined.previous`).
- `beat` sets `heartbeat_at` (and the live connection count and addresses) every
  `node_heartbeat_interval`, only while the row still holds this incarnation and is not
  marked dead. When it is not (another node declared this one dead while it was stalled or
  cut off) the node is fenced (`NodeFenced`): others have published its wills and taken its
  sessions, so it must stop serving, not carry on beside them.
- `claim_lapsed` marks every row whose heartbeat is older than `node_dead_after` as dead and
  claimed by this node, in one conditional UPDATE inside a transaction holding a cluster-wide
  advisory lock: of all the survivors scanning at once, exactly one claims a given dead node.
  The claimer calls the reap hook (publish the dead node's wills, take over its sessions)
  and then marks the row reaped. A claimer that dies before that leaves a claim whose
  claimer is itself dead: such a claim is claimable again (at least once, never lost).
- A node reaps only once it has itself beaten without a gap for `node_dead_after`: after a
  PostgreSQL outage every node's heartbeat is stale, and the first to reconnect must not
  declare the others dead before they had their chance to beat.
- A clean stop deletes the row (`leave`); a dead node's row stays, marked, for
  `node_dead_retention` seconds, so `fleet-gateway cluster status` and /metrics show it.

Heartbeat times are the nodes' own clocks (passed in): keep the machines' clocks in sync
(NTP) to well under `node_dead_after`.
"""

from __future__ import annotations

import inspect
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import trio

from .errors import ClusterError
from .schema import migrate

# pg_advisory_xact_lock key of the reaper's scan: "fleetgate reap" in ASCII, as a bigint.
REAP_LOCK = 0x666C6565_72656170

_COLUMNS = ("name, host, pid, started, heartbeat_at, connections, mqtt, http, version, "
            "dead_at, reaped_by, reaped_at, bus_lag")

Clock = Callable[[], datetime]
ReapHook = Callable[[str], "Awaitable[None] | None"]


class NodeError(ClusterError):
    """Membership cannot go on; `exit_code` is the CLI's for it."""

    exit_code = 10


class NodeNameInUse(NodeError):
    """Another live node holds this name (a second process with the same `--node`)."""

    exit_code = 10


class NodeFenced(NodeError):
    """This node was declared dead by another one (its heartbeat lapsed): it must stop."""

    exit_code = 11


def default_node_name() -> str:
    """`<host>-<pid>`: unique on a machine, and across machines with distinct host names."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One node as `cluster_nodes` shows it."""

    name: str
    host: str
    pid: int
    started: datetime
    heartbeat_at: datetime
    connections: int
    mqtt: str
    http: str
    version: str
    dead_at: datetime | None
    reaped_by: str | None
    reaped_at: datetime | None
    bus_lag: float | None = None
    """Seconds a relayed message took to reach this node, on average since its previous
    heartbeat (None: none relayed to it meanwhile, or no bus)."""

    def age(self, now: datetime) -> float:
        """Seconds since its last heartbeat."""
        return max(0.0, (now - self.heartbeat_at).total_seconds())

    def state(self, now: datetime, dead_after: float) -> str:
        """"alive"; "lapsed" (heartbeat older than `dead_after`, not yet claimed); "dead"
        (claimed by a survivor, being reaped); or "reaped" (its wills published)."""
        if self.reaped_at is not None:
            return "reaped"
        if self.dead_at is not None:
            return "dead"
        return "lapsed" if self.age(now) > dead_after else "alive"


@dataclass(frozen=True, slots=True)
class Joined:
    """What `join` found: `previous` names this node's previous run when it has to be
    reaped before serving (it died without a clean stop and nobody reaped it yet)."""

    previous: str | None


def ensure_schema(conn: Any) -> None:
    """Apply the cluster's migrations (`cluster_nodes` is migration 2)."""
    migrate(conn)


class Membership:
    """One node's row in `cluster_nodes`, over one psycopg (3, sync) connection.

    Each method is one short transaction and blocks: call them from a worker thread
    (`serve_node` does). `clock` gives UTC-aware now; `pid_alive` checks a pid on this host
    (tests pass their own).

    Raises (every method): psycopg.Error when PostgreSQL is unreachable or fails.
    """

    def __init__(self, conn: Any, name: str, *, clock: Clock, dead_after: float,
                 host: str | None = None, pid: int | None = None, version: str = "",
                 pid_alive: Callable[[int], bool] = _pid_alive) -> None:
        self.conn = conn
        self.name = name
        self.host = host if host is not None else socket.gethostname()
        self.pid = pid if pid is not None else os.getpid()
        self.version = version
        self.incarnation = uuid.uuid4()
        self.clock = clock
        self.dead_after = timedelta(seconds=dead_after)
        self.mqtt = ""
        self.http = ""
        self.joined: Joined | None = None  # what `join` found
        self._pid_alive = pid_alive

    def join(self) -> Joined:
        """Take this node's row, or refuse.

        Raises:
            NodeNameInUse: a live node holds the name, or a survivor is reaping its previous
                run right now (try again in a few seconds).
        """
        now = self.clock()
        with self.conn.transaction():
            row = self.conn.execute(
                f"SELECT {_COLUMNS} FROM cluster_nodes WHERE name = %s FOR UPDATE",
                (self.name,)).fetchone()
            previous = None
            if row is not None:
                old = NodeRow(*row)
                state = old.state(now, self.dead_after.total_seconds())
                gone = old.host == self.host and old.pid != self.pid and \
                    not self._pid_alive(old.pid)
                if state == "alive" and not gone:
                    raise NodeNameInUse(
                        f"node name {self.name!r} is in use by {old.host} pid {old.pid} "
                        f"(heartbeat {old.age(now):.1f} s ago): give this one another --node")
                if state == "dead" and not self._claimer_dead(old, now):
                    raise NodeNameInUse(
                        f"node name {self.name!r}: its previous run is being reaped by "
                        f"{old.reaped_by}; try again in a few seconds")
                if state != "reaped":
                    previous = self.name
                self.conn.execute("DELETE FROM cluster_nodes WHERE name = %s", (self.name,))
            self.conn.execute(
                "INSERT INTO cluster_nodes (name, incarnation, host, pid, started, "
                "heartbeat_at, mqtt, http, version) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (self.name, self.incarnation, self.host, self.pid, now, now, self.mqtt,
                 self.http, self.version))
        self.joined = Joined(previous)
        return self.joined

    def _claimer_dead(self, row: NodeRow, now: datetime) -> bool:
        claimer = self.conn.execute(
            "SELECT heartbeat_at, dead_at FROM cluster_nodes WHERE name = %s",
            (row.reaped_by,)).fetchone()
        return claimer is None or claimer[1] is not None or \
            claimer[0] < now - self.dead_after

    def beat(self, connections: int, bus_lag: float | None = None) -> None:
        """Stamp this node's heartbeat (and its live connections, addresses, bus lag).

        Raises:
            NodeFenced: the row is gone or marked dead: another node declared this one dead.
        """
        with self.conn.transaction():
            done = self.conn.execute(
                "UPDATE cluster_nodes SET heartbeat_at = %s, connections = %s, mqtt = %s, "
                "http = %s, bus_lag = %s "
                "WHERE name = %s AND incarnation = %s AND dead_at IS NULL",
                (self.clock(), connections, self.mqtt, self.http, bus_lag, self.name,
                 self.incarnation))
            if done.rowcount != 1:
                raise NodeFenced(
                    f"node {self.name!r} was declared dead by another node (its heartbeat "
                    f"lapsed for {self.dead_after.total_seconds():g} s): stopping")

    def claim_lapsed(self) -> list[str]:
        """Declare dead every node whose heartbeat lapsed and claim it for reaping; returns
        the names this node must now reap (then call `reaped` for each)."""
        cutoff = self.clock() - self.dead_after
        with self.conn.transaction():
            # One scanner at a time: the UPDATE below then sees every claim committed before.
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (REAP_LOCK,))
            rows = self.conn.execute(
                "UPDATE cluster_nodes n SET dead_at = coalesce(n.dead_at, %(now)s), "
                "reaped_by = %(me)s "
                "WHERE n.name <> %(me)s AND n.reaped_at IS NULL "
                "AND n.heartbeat_at < %(cutoff)s "
                # Unclaimed, or claimed by this node (a reap to retry), or by a dead claimer.
                "AND (n.reaped_by IS NULL OR n.reaped_by = %(me)s OR NOT EXISTS ("
                "SELECT 1 FROM cluster_nodes r WHERE r.name = n.reaped_by "
                "AND r.dead_at IS NULL AND r.heartbeat_at >= %(cutoff)s)) RETURNING n.name",
                {"now": self.clock(), "me": self.name, "cutoff": cutoff}).fetchall()
        return sorted(r[0] for r in rows)

    def reaped(self, name: str) -> None:
        """Mark `name` reaped (its wills published, its sessions taken over)."""
        mark_reaped(self.conn, name, self.clock())

    def forget_dead(self, retention: float) -> int:
        """Delete the rows of nodes reaped more than `retention` seconds ago."""
        with self.conn.transaction():
            done = self.conn.execute(
                "DELETE FROM cluster_nodes WHERE reaped_at < %s",
                (self.clock() - timedelta(seconds=retention),))
        return done.rowcount

    def leave(self) -> None:
        """A clean stop: delete this node's row (if it is still this run's and not declared
        dead: a dead node's row is its reaper's)."""
        with self.conn.transaction():
            self.conn.execute("DELETE FROM cluster_nodes WHERE name = %s AND incarnation = %s "
                              "AND dead_at IS NULL", (self.name, self.incarnation))

    def close(self) -> None:
        """Leave (quietly: PostgreSQL may be gone, the row then lapses) and disconnect."""
        if self.conn is not None:
            _leave_quietly(self)
            _close_quietly(self.conn)
            self.conn = None


def mark_reaped(conn: Any, name: str, now: datetime) -> None:
    """Mark node `name` reaped at `now` (its wills published, its sessions taken over)."""
    with conn.transaction():
        conn.execute("UPDATE cluster_nodes SET reaped_at = %s WHERE name = %s "
                     "AND reaped_at IS NULL", (now, name))


def read_nodes(conn: Any) -> list[NodeRow]:
    """Every row of `cluster_nodes`, by name (empty when the table does not exist yet)."""
    exists = conn.execute("SELECT to_regclass('cluster_nodes')").fetchone()[0]
    if exists is None:
        return []
    return [NodeRow(*row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM cluster_nodes ORDER BY name").fetchall()]


@dataclass
class ClusterView:
    """What this node last read of the cluster, for /metrics (refreshed each heartbeat), and
    its own row (`node`, when it joined through `join_node`)."""

    dead_after: float
    node: Membership | None = None
    nodes: list[NodeRow] = field(default_factory=list)
    read_at: datetime | None = None
    reaped: int = 0  # nodes this node reaped
    heartbeat_failures: int = 0  # beats that could not reach PostgreSQL

    def gone(self, name: str, now: datetime | None = None) -> bool:
        """Whether node `name` is known not to run any more: its row is missing, or not
        alive (lapsed, dead, reaped), or it ran on this host and its pid is gone (a killed
        `--workers` worker: known at once, before its heartbeat lapses). A takeover from a
        gone node need not wait for it to let the session go."""
        row = next((n for n in self.nodes if n.name == name), None)
        if row is None:
            return True
        if row.state(now or datetime.now(UTC), self.dead_after) != "alive":
            return True
        return row.host == socket.gethostname() and row.pid != os.getpid() and \
            not _pid_alive(row.pid)


async def join_node(connect: Callable[[], Any], name: str, *, clock: Clock, dead_after: float,
                    version: str = "") -> Membership:
    """Connect, migrate the cluster's tables and take this node's row (`Membership.join`).

    Raises:
        NodeNameInUse: a live node holds `name`.
        psycopg.Error: PostgreSQL unreachable.
    """
    conn = await trio.to_thread.run_sync(connect)
    try:
        await trio.to_thread.run_sync(ensure_schema, conn)
        membership = Membership(conn, name, clock=clock, dead_after=dead_after,
                                version=version)
        await trio.to_thread.run_sync(membership.join)
    except BaseException:
        await trio.to_thread.run_sync(_close_quietly, conn)
        raise
    return membership


class _Reaper:
    """Reaps in tasks of their own, so that a long reap (many sessions, many wills) never
    holds up this node's heartbeat; one reap per dead node at a time."""

    def __init__(self, membership: Membership, connect: Callable[[], Any], reap: ReapHook,
                 log: Any, view: ClusterView | None, nursery: trio.Nursery) -> None:
        self.membership, self.reap, self.log, self.view = membership, reap, log, view
        self.connect = connect  # its own connection: the heartbeat's is the beat loop's
        self.nursery = nursery
        self.busy: set[str] = set()

    async def scan(self) -> None:
        """Claim the lapsed nodes and start reaping each (a reap that fails stays claimed
        by this node and is tried again at a later scan)."""
        for dead in await trio.to_thread.run_sync(self.membership.claim_lapsed):
            if dead not in self.busy:
                self.log.emit("node_dead", node=dead, reaper=self.membership.name)
                self.start(dead)

    def start(self, dead: str, *, mark: bool = True) -> None:
        self.busy.add(dead)
        self.nursery.start_soon(self._reap, dead, mark)

    def _mark(self, dead: str) -> None:
        conn = self.connect()
        try:
            mark_reaped(conn, dead, self.membership.clock())
        finally:
            _close_quietly(conn)

    async def _reap(self, dead: str, mark: bool) -> None:
        name = self.membership.name
        try:
            await _call_reap(self.reap, dead)
            if mark:
                await trio.to_thread.run_sync(self._mark, dead)
        except Exception as exc:  # the hook's bug or PostgreSQL lost: retried next scan
            self.log.emit("reap_failed", node=name, dead=dead,
                          detail=f"{type(exc).__name__}: {exc}"[:300])
            return
        finally:
            self.busy.discard(dead)
        self.log.emit("node_reaped", node=name, dead=dead)
        if self.view is not None:
            self.view.reaped += 1


async def _call_reap(reap: ReapHook, name: str) -> None:
    result = reap(name)
    if inspect.isawaitable(result):
        await result


async def serve_node(
    connect: Callable[[], Any],
    name: str,
    *,
    interval: float,
    dead_after: float,
    dead_retention: float,
    reap: ReapHook,
    connections: Callable[[], int],
    log: Any,
    view: ClusterView | None = None,
    bus_lag: Callable[[], float | None] = lambda: None,
    membership: Membership | None = None,
    version: str = "",
    clock: Clock = lambda: datetime.now(UTC),
    task_status: trio.TaskStatus[Membership] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run this node's membership until cancelled: join (refusing a name in use, reaping
    this name's previous run), then beat every `interval` seconds, claim and reap lapsed
    nodes, and on cancellation (a clean stop) delete the row.

    `connect()` opens a psycopg connection (autocommit); when PostgreSQL is lost it is
    reopened at each following beat (the node keeps serving; it resumes beating when it is
    back). Reaps run in tasks of their own: the heartbeat never waits for one.
    `reap(name)` (sync or async) publishes a dead node's wills and takes over its sessions;
    `bus_lag()` is written with each beat (see `NodeRow.bus_lag`).
    `membership`: already joined (`join_node`, so that a name in use is refused before
    anything else starts); its previous run is reaped here, once `reap` can work.
    `task_status.started(membership)` once the row is this node's: set
    `membership.mqtt`/`.http` to the bound addresses, the next beat writes them.

    Raises:
        NodeNameInUse: at the start, the name is held by a live node.
        NodeFenced: another node declared this one dead.
        psycopg.Error: PostgreSQL unreachable at the start.
    """
    if membership is None:
        membership = await join_node(connect, name, clock=clock, dead_after=dead_after,
                                     version=version)
    try:
        async with trio.open_nursery() as nursery:
            reaper = _Reaper(membership, connect, reap, log, view, nursery)
            joined = membership.joined
            if joined is not None and joined.previous is not None:
                log.emit("node_reaping", node=name, dead=joined.previous,
                         detail="this node's previous run stopped without a clean stop")
                reaper.start(joined.previous, mark=False)  # its row is this run's now
            log.emit("node_joined", node=name, incarnation=str(membership.incarnation))
            task_status.started(membership)
            await _beat_forever(membership, connect, interval=interval, dead_after=dead_after,
                                dead_retention=dead_retention, connections=connections,
                                bus_lag=bus_lag, log=log, view=view, clock=clock,
                                reaper=reaper)
    except* trio.Cancelled:
        # A clean stop: the row goes, nobody will reap this node (its sessions were closed).
        with trio.move_on_after(2.0, shield=True):
            if membership.conn is not None:
                await trio.to_thread.run_sync(_leave_quietly, membership)
                log.emit("node_left", node=name)
        raise
    finally:
        if membership.conn is not None:
            await trio.to_thread.run_sync(_close_quietly, membership.conn)
            membership.conn = None


async def _beat_forever(membership: Membership, connect: Callable[[], Any], *,
                        interval: float, dead_after: float, dead_retention: float,
                        connections: Callable[[], int], bus_lag: Callable[[], float | None],
                        log: Any, view: ClusterView | None, clock: Clock,
                        reaper: _Reaper) -> None:
    name = membership.name
    beating_since = clock()
    failures = 0
    while True:
        await trio.sleep(interval)
        try:
            if membership.conn is None:
                membership.conn = await trio.to_thread.run_sync(connect)
            await trio.to_thread.run_sync(membership.beat, connections(), bus_lag())
            now = clock()
            if failures:
                log.emit("heartbeat_resumed", node=name, failures=failures)
                failures = 0
                beating_since = now
            if (now - beating_since).total_seconds() >= dead_after:
                await reaper.scan()
                await trio.to_thread.run_sync(membership.forget_dead, dead_retention)
            if view is not None:
                view.nodes = await trio.to_thread.run_sync(read_nodes, membership.conn)
                view.read_at = now
        except NodeFenced:
            log.emit("node_fenced", node=name, detail="declared dead by another node")
            raise
        except psycopg.Error as exc:  # PostgreSQL lost: keep serving, reconnect, retry
            failures += 1
            if view is not None:
                view.heartbeat_failures += 1
            if failures == 1 or failures % 30 == 0:
                log.emit("heartbeat_failed", node=name, failures=failures,
                         detail=f"{type(exc).__name__}: {exc}".strip()[:300])
            await trio.to_thread.run_sync(_close_quietly, membership.conn)
            membership.conn = None


def _close_quietly(conn: Any) -> None:
    if conn is not None:
        try:
            conn.close()
        except Exception:  # noqa: S110 - closing a broken connection may fail; it is gone
            pass


def _leave_quietly(membership: Membership) -> None:
    try:
        membership.leave()
    except Exception:  # noqa: S110 - PostgreSQL gone: the row lapses and is reaped instead
        pass


class _LagSince:
    """The mean of a latency histogram's observations since the previous call (None when
    there were none): the bus lag a heartbeat carries."""

    def __init__(self, histogram: Any) -> None:
        self.histogram = histogram
        self.sum, self.count = histogram.sum, histogram.count

    def __call__(self) -> float | None:
        h = self.histogram
        added, total = h.count - self.count, h.sum - self.sum
        self.sum, self.count = h.sum, h.count
        return total / added if added > 0 else None


def node_connect(url: str) -> Callable[[], Any]:
    """How a node (re)connects for its heartbeat: autocommit, a 10 s connect deadline."""
    from functools import partial

    return partial(psycopg.connect, url, autocommit=True, connect_timeout=10)


def release() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fleetgate")
    except PackageNotFoundError:
        return "unknown"


async def serve_gateway_node(gateway: Any, membership: Membership, *, reap: ReapHook,
                             task_status: trio.TaskStatus[Membership]
                             = trio.TASK_STATUS_IGNORED) -> None:
    """`serve_node` as `fleet-gateway serve` runs it on a PostgreSQL store: the node's name
    and timings from the gateway's config, its live connections, the bus lag from the
    cluster metrics (`cluster_relay_lag_seconds`), and the view /metrics reads
    (`gateway.membership`); `membership` from `join_node` at the start."""
    config = gateway.config
    lag = getattr(getattr(gateway.metrics, "cluster", None), "lag", None)
    await serve_node(
        node_connect(config.store), membership.name,
        interval=config.node_heartbeat_interval, dead_after=config.node_dead_after,
        dead_retention=config.node_dead_retention, reap=reap,
        connections=lambda: len(gateway.connections), log=gateway.log, view=gateway.membership,
        bus_lag=_LagSince(lag) if lag is not None else (lambda: None), version=release(),
        membership=membership, task_status=task_status)
