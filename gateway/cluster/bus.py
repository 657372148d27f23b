"""The cluster bus: PostgreSQL LISTEN/NOTIFY between the gateway nodes of one database.

Theory of operation. Each node holds one dedicated connection that LISTENs on the cluster's
channels (`CHANNELS`) and a few more that write (`PgLane`: a psycopg connection used from a
worker thread, one call at a time). The LISTEN side is trio-native: after LISTEN the task
waits for the socket to be readable (`trio.lowlevel.wait_readable(pgconn.socket)`), lets
libpq consume the input and takes the notifications it parsed (`pgconn.notifies()`), so no
thread sits blocked in libpq and cancelling the task is immediate. An idle connection is
checked every `ping_interval` seconds with a `SELECT 1` under a deadline, so a silently dead
one is noticed (a killed backend is noticed at once: its socket reads EOF).

Sends (`Bus.send`) never block the caller: they go into a bounded queue that one sender task
takes in batches, each batch ONE transaction of `pg_notify` calls (pipelined), so one
publisher's notifications arrive everywhere in the order they were sent. Every payload is
framed `origin|sequence|body`: a node ignores its own, the sequence makes each payload unique
(PostgreSQL folds identical payloads of one transaction) and shows a gap. A body too large
for a NOTIFY (PostgreSQL allows 8000 bytes) goes into `cluster_relay_bodies` in the same
transaction and the NOTIFY carries `@<id>`; receivers read the row (the sender deletes its
rows after `BODY_TTL` seconds).

A NOTIFY sent while a node was not listening is lost for that node. So after every
(re)connect, once LISTEN is in force, the bus calls `resync()`: each consumer re-reads what
it keeps from the tables (the registry, the interest set, the bars). Reconnects back off
from `backoff[0]` to `backoff[1]` seconds. Handlers run in order on the listening task and
must return promptly (long work goes to a task of their own).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, TypeVar

import psycopg
import trio

from ..metrics import ClusterMetrics
from ..storage.postgres.ops import ended_by_server
from .errors import ClusterUnavailable

__all__ = ["CHANNELS", "CONTROL", "RELAY", "Bus", "PgLane"]

RELAY = "fleetgate_relay"
"""Messages published in a jail, for the jail's subscribers on other nodes."""
CONTROL = "fleetgate_control"
"""Everything else: interest, takeovers, bars, erasures, CRL reloads (rare)."""
CHANNELS = (RELAY, CONTROL)

NOTIFY_LIMIT = 7900  # payload bytes past which a body goes through a table row
BODY_TTL = 120.0  # seconds a large body stays readable
SEND_BATCH = 500  # notifications per sending transaction
CONNECT_TIMEOUT = 5  # seconds (libpq's connect_timeout)
YIELD_EVERY = 16  # notifications handled before the listener yields to the event loop

T = TypeVar("T")
Handler = Callable[[str, str], Awaitable[None]]
"""(origin node, body) -> None: one received notification of a channel."""


def _connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)


class PgLane:
    """One psycopg connection used from a worker thread, one call at a time, opened when
    first needed and again after a failure."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection | None = None
        self._lock = trio.Lock()

    async def run(self, fn: Callable[[psycopg.Connection], T]) -> T:
        """`fn(connection)` in a worker thread (blocking psycopg calls are fine there).

        Raises:
            ClusterUnavailable: PostgreSQL cannot be reached (the next call reconnects).
        """
        async with self._lock:
            try:
                return await trio.to_thread.run_sync(self._call, fn)
            except psycopg.OperationalError as exc:
                raise ClusterUnavailable(f"PostgreSQL: {exc}".strip()) from None

    def _call(self, fn: Callable[[psycopg.Connection], T]) -> T:
        if self._conn is not None and ended_by_server(self._conn):
            self.close()  # a restart or a failover: the call goes to a new connection
        if self._conn is None or self._conn.closed:
            self._conn = _connect(self.url)
        try:
            return fn(self._conn)
        except psycopg.OperationalError:
            self.close()
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class Bus:
    """The node's LISTEN connection, its sender and its query lanes."""

    def __init__(self, url: str, node: str, *, handlers: Mapping[str, Handler],
                 resync: Callable[[], Awaitable[None]], metrics: ClusterMetrics, log: Any,
                 max_queue: int = 10_000, backoff: tuple[float, float] = (0.1, 5.0),
                 ping_interval: float = 10.0) -> None:
        if "|" in node or not node:
            raise ValueError(f"node name {node!r}: not empty, no '|'")
        self.url = url
        self.node = node
        self.metrics = metrics
        self.log = log
        self.max_queue = max_queue
        self.backoff = backoff
        self.ping_interval = ping_interval
        self._handlers = dict(handlers)
        self._resync = resync
        self.query = PgLane(url)  # the registry's, the bars' and other consumers' lane
        self._sender = PgLane(url)
        self._reader = PgLane(url)  # large bodies, read while listening
        self._outbox: deque[tuple[str, str]] = deque()
        self._queued = 0  # sequence of the last payload queued
        self._sent = 0  # ... and of the last one committed (or dropped)
        self._wake = trio.Event()
        self._progress = trio.Event()
        self._seen: dict[str, int] = {}  # origin -> its last sequence received
        self.connected = False

    # -- sending ------------------------------------------------------------------------

    def send(self, channel: str, body: str) -> bool:
        """Queue `body` for every other node listening on `channel`; never blocks.

        Returns False (counted in `relay_dropped`) when `max_queue` sends are waiting."""
        if len(self._outbox) >= self.max_queue:
            self.metrics.relay_dropped.inc()
            return False
        self._queued += 1
        self._outbox.append((channel, f"{self.node}|{self._queued}|{body}"))
        self._wake.set()
        return True

    async def flush(self) -> None:
        """Return once everything queued so far is committed (or dropped)."""
        upto = self._queued
        while self._sent < upto:
            await self._progress.wait()

    async def _send_forever(self) -> None:
        delay = self.backoff[0]
        while True:
            if not self._outbox:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            batch = [self._outbox[i] for i in range(min(SEND_BATCH, len(self._outbox)))]
            try:
                large = await self._sender.run(partial(_send_batch, batch, self.node))
            except ClusterUnavailable as exc:
                # Kept at the front: order holds; new sends are dropped once the queue is
                # full (max_queue), so memory stays bounded while PostgreSQL is away.
                self.log.emit("cluster_send_failed", node=self.node, detail=str(exc),
                              waiting=len(self._outbox))
                await trio.sleep(delay)
                delay = min(delay * 2, self.backoff[1])
                continue
            delay = self.backoff[0]
            for _ in batch:
                self._outbox.popleft()
            self.metrics.notifies_sent.inc(len(batch))
            self.metrics.large_bodies.inc(large)
            self._sent += len(batch)
            event, self._progress = self._progress, trio.Event()
            event.set()

    async def _sweep_forever(self) -> None:
        """Delete this node's large bodies once every listener had time to read them."""
        while True:
            await trio.sleep(BODY_TTL / 2)
            try:
                await self._sender.run(partial(_sweep, self.node))
            except ClusterUnavailable:
                pass  # the next sweep deletes them

    # -- listening ----------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Run until cancelled: listen (reconnecting with backoff), send, sweep. Started once
        the first LISTEN is in force and the first `resync()` returned.

        Raises:
            ClusterUnavailable: PostgreSQL cannot be reached at start.
        """
        async with trio.open_nursery() as nursery:
            conn = await self._open()  # at start, unreachable is the caller's error
            nursery.start_soon(self._send_forever)
            nursery.start_soon(self._sweep_forever)
            try:
                await self._listen_forever(conn, task_status)
            finally:
                for lane in (self.query, self._sender, self._reader):
                    lane.close()

    async def _open(self) -> psycopg.Connection:
        try:
            return await trio.to_thread.run_sync(_open_listener, self.url)
        except psycopg.OperationalError as exc:
            raise ClusterUnavailable(f"PostgreSQL: {exc}".strip()) from None

    async def _listen_forever(self, conn: psycopg.Connection | None,
                              task_status: trio.TaskStatus[None]) -> None:
        delay = self.backoff[0]
        started = False
        while True:
            if conn is None:
                try:
                    conn = await self._open()
                except ClusterUnavailable as exc:
                    self.log.emit("cluster_bus_down", node=self.node, detail=str(exc),
                                  retry=delay)
                    await trio.sleep(delay)
                    delay = min(delay * 2, self.backoff[1])
                    continue
            try:
                self._seen.clear()  # sequences restart with what resync re-reads
                await self._resync()
                self.metrics.resyncs.inc()
                self.connected = True
                if not started:
                    started = True
                    task_status.started()
                else:
                    self.log.emit("cluster_bus_resumed", node=self.node)
                delay = self.backoff[0]
                await self._receive(conn)
            except (psycopg.Error, OSError, ClusterUnavailable, trio.TooSlowError) as exc:
                self.connected = False
                self.metrics.reconnects.inc()
                self.log.emit("cluster_bus_lost", node=self.node,
                              detail=f"{type(exc).__name__}: {exc}".strip())
            finally:
                self.connected = False
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(conn.close)
                conn = None
            await trio.sleep(delay)
            delay = min(delay * 2, self.backoff[1])

    async def _receive(self, conn: psycopg.Connection) -> None:
        pgconn = conn.pgconn
        sock = pgconn.socket
        while True:
            with trio.move_on_after(self.ping_interval) as idle:
                await trio.lowlevel.wait_readable(sock)
            if idle.cancelled_caught:
                await self._ping(pgconn, sock)
                continue
            await self._take(pgconn)

    async def _take(self, pgconn: Any) -> None:
        """Read what arrived and handle the notifications libpq parsed from it."""
        pgconn.consume_input()  # psycopg.OperationalError when the connection is gone
        if pgconn.status != psycopg.pq.ConnStatus.OK:
            raise psycopg.OperationalError("the bus connection is closed")
        notes = []
        while (note := pgconn.notifies()) is not None:
            notes.append(note)
        for i, note in enumerate(notes, 1):
            await self._dispatch(note.relname.decode(), note.extra.decode())
            if i % YIELD_EVERY == 0:
                # A burst must not hold the loop: the sessions' writers drain their
                # outboxes between steps (else a subscriber's max_queued fills at once).
                await trio.lowlevel.checkpoint()

    async def _ping(self, pgconn: Any, sock: int) -> None:
        pgconn.send_query(b"SELECT 1")
        with trio.fail_after(self.ping_interval):
            while True:
                while pgconn.is_busy():
                    await trio.lowlevel.wait_readable(sock)
                    await self._take(pgconn)
                result = pgconn.get_result()
                if result is None:
                    return
                if result.status != psycopg.pq.ExecStatus.TUPLES_OK:
                    raise psycopg.OperationalError("the bus connection's ping failed")

    async def _dispatch(self, channel: str, payload: str) -> None:
        origin, _, rest = payload.partition("|")
        seq_text, _, body = rest.partition("|")
        if origin == self.node or not seq_text.isdigit():
            return
        self.metrics.notifies_received.inc()
        seq, last = int(seq_text), self._seen.get(origin)
        if last is not None and seq > last + 1:
            self.metrics.relay_gaps.inc(seq - last - 1)
        self._seen[origin] = seq
        if body.startswith("@") and body[1:].isdigit():
            try:
                found = await self._reader.run(partial(_read_body, int(body[1:])))
            except ClusterUnavailable:
                found = None
            if found is None:  # swept or unreachable: a gap the resync repairs
                self.metrics.relay_gaps.inc()
                return
            body = found
        handler = self._handlers.get(channel)
        if handler is None:
            return
        try:
            await handler(origin, body)
        except Exception as exc:  # one bad note must not stop the node's bus
            self.log.emit("cluster_handler_failed", node=self.node, channel=channel,
                          origin=origin, detail=f"{type(exc).__name__}: {exc}")


def _open_listener(url: str) -> psycopg.Connection:
    conn = _connect(url)
    try:
        for channel in CHANNELS:
            conn.execute(f"LISTEN {channel}")
    except BaseException:
        conn.close()
        raise
    return conn


def _send_batch(batch: list[tuple[str, str]], node: str, conn: psycopg.Connection) -> int:
    """One transaction: large bodies into their table, then every NOTIFY, in order.
    Returns how many bodies went through the table."""
    large = 0
    with conn.transaction(), conn.cursor() as cur:
        rows = []
        for channel, payload in batch:
            if len(payload.encode()) > NOTIFY_LIMIT:
                head, _, body = payload.partition("|")
                seq, _, body = body.partition("|")
                cur.execute("INSERT INTO cluster_relay_bodies (node, body) VALUES (%s, %s) "
                            "RETURNING id", (node, body))
                payload = f"{head}|{seq}|@{cur.fetchone()[0]}"  # type: ignore[index]
                large += 1
            rows.append((channel, payload))
        cur.executemany("SELECT pg_notify(%s, %s)", rows)
    return large


def _read_body(body_id: int, conn: psycopg.Connection) -> str | None:
    row = conn.execute("SELECT body FROM cluster_relay_bodies WHERE id = %s",
                       (body_id,)).fetchone()
    return None if row is None else row[0]


def _sweep(node: str, conn: psycopg.Connection) -> None:
    conn.execute("DELETE FROM cluster_relay_bodies WHERE node = %s AND created < "
                 "now() - make_interval(secs => %s)", (node, BODY_TTL))


def wall() -> float:
    """Wall-clock seconds (the relay's lag compares two nodes' clocks)."""
    return time.time()
