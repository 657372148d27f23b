"""The load generator: pipelined mTLS MQTT clients in worker processes.

Theory of operation. The coordinator (`run_load`) starts ``workers`` processes, each pinned to
the load generator's cores and each running one asyncio loop with many TLS connections. Every
packet a worker sends was encoded before the measured window opens (`bench.mqttwire`); QoS 1
publishers keep up to ``window`` messages in flight per connection, write whole blocks of
packets in one call, and count PUBACKs from bulk reads. QoS 0 blocks end with a PINGREQ: a
server answers it only after the publishes before it (MQTT 3.1.1 section 4.6 keeps a
connection's packets in order), so its PINGRESP acknowledges the block, and the same window
bounds what is unanswered.

Workers report through a queue; the coordinator opens and closes the window with events, so
that the server's CPU seconds can be read just outside it. Modes:

``connect``  full connects (TCP, TLS handshake, CONNECT, CONNACK, DISCONNECT), ``count`` each.
``publish``  ``clients`` connections publish for ``duration`` seconds at QoS ``qos``.
``idle``     ``clients`` connections connect and stay idle until told to stop.
``storm``    ``clients`` connections all try at once when the window opens (a reconnect
             storm after an outage), each retrying after a failure until ``duration``;
             the window closes when the last one has its CONNACK. With ``resume``, every
             device first connects once before the window (as it did before the outage)
             and offers the TLS session it got then, as a device's TLS stack would
             (`bench.tlsclient`); ``resumed`` counts the connections the server resumed.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import queue
import random
import resource
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from bench import mqttwire
from bench.mqttwire import AckCounter, PacketType
from bench.tlsclient import TLSClient

STORM_ATTEMPT_TIMEOUT = 30.0  # seconds a device waits for CONNACK before it tries again
STORM_BACKOFF = (0.5, 2.0)  # seconds between attempts, uniformly drawn


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What one run of the load generator does. Paths are strings so the spec pickles."""

    mode: str  # "connect" | "publish" | "idle" | "storm"
    host: str
    port: int
    root: str
    devices: tuple[tuple[str, str], ...]  # (certificate chain, key) per device
    tls: str = "1.3"  # "1.3" or "1.2": the highest version the client offers
    clients: int = 10  # publish/idle: connections in total, over all workers
    count: int = 100  # connect: connects in total, over all workers
    concurrency: int = 64  # connect/idle: handshakes in progress at once per worker
    qos: int = 1
    duration: float = 5.0
    payload_size: int = 100
    topic: str = "bench/load"
    window: int = 500  # QoS 1 messages in flight per connection
    block: int = 50  # packets per write
    keepalive: int = 600
    workers: int = 1
    cpus: tuple[int, ...] = ()
    ack_timeout: float = 60.0
    client_prefix: str = "bench"
    prelude: bytes = b""  # one QoS 1 PUBLISH (packet id 65535) sent and acknowledged after CONNACK
    resume: bool = False  # storm: offer the TLS session of a connection made before the window


@dataclass(slots=True)
class WorkerResult:
    ok: int = 0  # connects completed / connections open / messages acknowledged
    sent: int = 0
    failed: int = 0
    resumed: int = 0  # storm: connections the server resumed from the offered session
    errors: dict[str, int] = field(default_factory=dict)
    t_start: float = 0.0
    t_end: float = 0.0
    cpu_s: float = 0.0

    def error(self, exc: BaseException) -> None:
        key = type(exc).__name__ + (f": {exc}" if str(exc) else "")
        key = key[:120]
        self.errors[key] = self.errors.get(key, 0) + 1
        self.failed += 1


@dataclass(frozen=True, slots=True)
class LoadResult:
    """The sum over workers. ``rate`` is ``ok`` per second of the measured window."""

    ok: int
    sent: int
    failed: int
    errors: dict[str, int]
    seconds: float
    loadgen_cpu_s: float
    resumed: int = 0

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "sent": self.sent, "failed": self.failed, "errors": self.errors,
            "resumed": self.resumed,
            "seconds": round(self.seconds, 4), "rate": round(self.rate, 1),
            "loadgen_cpu_s": round(self.loadgen_cpu_s, 3),
        }


def _cpu_now() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def client_context(spec: LoadSpec, device: tuple[str, str]) -> ssl.SSLContext:
    """A device's TLS client context: verifies the server like real firmware would."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3 if spec.tls == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(spec.root)
    ctx.load_cert_chain(device[0], device[1])
    return ctx


class _Worker:
    def __init__(self, spec: LoadSpec, index: int) -> None:
        self.spec = spec
        self.index = index
        self.contexts: dict[int, ssl.SSLContext] = {}
        self.result = WorkerResult()

    def context(self, n: int) -> ssl.SSLContext:
        d = n % len(self.spec.devices)
        if d not in self.contexts:
            self.contexts[d] = client_context(self.spec, self.spec.devices[d])
        return self.contexts[d]

    def client_id(self, n: int) -> str:
        return f"{self.spec.client_prefix}-{self.index}-{n}"

    async def open(self, n: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect, handshake, CONNECT and wait for a successful CONNACK."""
        s = self.spec
        reader, writer = await asyncio.open_connection(
            s.host, s.port, ssl=self.context(n), server_hostname="localhost",
            limit=1 << 20,
        )
        try:
            writer.write(mqttwire.connect(self.client_id(n), keepalive=s.keepalive))
            head = await reader.readexactly(4)
            if head[0] >> 4 != PacketType.CONNACK or head[3] != 0:
                raise ConnectionError(f"CONNACK {head.hex()}")
            if s.prelude:  # a declaration the measured publishes depend on
                writer.write(s.prelude)
                ack = await reader.readexactly(4)
                if ack != bytes([PacketType.PUBACK << 4, 2, 0xFF, 0xFF]):
                    raise ConnectionError(f"prelude answered with {ack.hex()}")
        except BaseException:
            writer.close()
            raise
        return reader, writer

    async def close(self, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(mqttwire.DISCONNECT)
            await writer.drain()
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 5)
        except (TimeoutError, OSError, ssl.SSLError):
            pass

    # -- connect mode ------------------------------------------------------------------------

    async def connect_mode(self, share: int) -> None:
        sem = asyncio.Semaphore(self.spec.concurrency)

        async def one(n: int) -> None:
            async with sem:
                try:
                    _, writer = await asyncio.wait_for(self.open(n), 30)
                except (TimeoutError, OSError, ssl.SSLError, ConnectionError,
                        asyncio.IncompleteReadError) as exc:
                    self.result.error(exc)
                    return
                await self.close(writer)
                self.result.ok += 1

        await asyncio.gather(*(one(n) for n in range(share)))

    # -- idle mode ---------------------------------------------------------------------------

    async def idle_mode(self, share: int) -> list[asyncio.StreamWriter]:
        sem = asyncio.Semaphore(self.spec.concurrency)
        writers: list[asyncio.StreamWriter] = []

        async def one(n: int) -> None:
            async with sem:
                try:
                    _, writer = await asyncio.wait_for(self.open(n), 300)
                except (TimeoutError, OSError, ssl.SSLError, ConnectionError,
                        asyncio.IncompleteReadError) as exc:
                    self.result.error(exc)
                    return
                writers.append(writer)
                self.result.ok += 1

        await asyncio.gather(*(one(n) for n in range(share)))
        return writers

    # -- storm mode --------------------------------------------------------------------------

    async def open_resumable(self, n: int, session: ssl.SSLSession | None) -> TLSClient:
        """Like `open`, offering `session`; the client keeps the one the server sends."""
        client = TLSClient(self.context(n), session)
        try:
            await client.connect(self.spec.host, self.spec.port)
            await client.send(mqttwire.connect(self.client_id(n), keepalive=self.spec.keepalive))
            head = await client.receive_exactly(4)
            if head[0] >> 4 != PacketType.CONNACK or head[3] != 0:
                raise ConnectionError(f"CONNACK {head.hex()}")
        except BaseException:
            client.close()
            raise
        return client

    async def warm_up(self, share: int) -> dict[int, ssl.SSLSession]:
        """Connect every device once, as before an outage, and keep its TLS session."""
        sem = asyncio.Semaphore(self.spec.concurrency)
        sessions: dict[int, ssl.SSLSession] = {}

        async def one(n: int) -> None:
            async with sem:
                client = await asyncio.wait_for(self.open_resumable(n, None), 300)
                await client.send(mqttwire.DISCONNECT)
                client.close()
                if client.session is not None:
                    sessions[n] = client.session

        await asyncio.gather(*(one(n) for n in range(share)))
        return sessions

    async def storm_mode(self, share: int, give_up: float,
                         sessions: dict[int, ssl.SSLSession]) -> list[TLSClient]:
        """Every device connects at once and, like firmware, retries until it is back."""
        clients: list[TLSClient] = []
        rng = random.Random(self.index)

        async def one(n: int) -> None:
            while True:
                try:
                    client = await asyncio.wait_for(
                        self.open_resumable(n, sessions.get(n)), STORM_ATTEMPT_TIMEOUT)
                except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
                    self.result.error(exc)  # a failed attempt; the device tries again
                    if time.monotonic() > give_up:
                        return
                    await asyncio.sleep(rng.uniform(*STORM_BACKOFF))
                    continue
                clients.append(client)
                self.result.ok += 1
                self.result.resumed += client.resumed
                return

        await asyncio.gather(*(one(n) for n in range(share)))
        return clients

    # -- publish mode ------------------------------------------------------------------------

    async def publish_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          blocks: list[bytes], deadline: float) -> None:
        s = self.spec
        counter = AckCounter()
        # QoS 1 counts PUBACKs; a QoS 0 block ends with a PINGREQ, whose PINGRESP stands for the
        # whole block. Either way at most ``window`` messages are unanswered, so a slow server
        # is measured at its pace instead of drowning in megabytes of socket buffers.
        want, unit = (PacketType.PUBACK, 1) if s.qos else (PacketType.PINGRESP, s.block)
        acked = inflight = sent = 0
        wake = asyncio.Event()

        sock = writer.get_extra_info("socket")

        async def read() -> None:
            nonlocal acked, inflight
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    raise ConnectionError("server closed the connection")
                # ACK at once: a server writing acknowledgements with Nagle on (mosquitto's
                # default) would otherwise wait for our delayed ACK, 40 ms per window.
                _quickack(sock)
                counter.feed(data)
                got = counter.count(want) * unit
                inflight -= got - acked
                acked = got
                wake.set()

        reader_task = asyncio.create_task(read())
        try:
            i, nblocks = 0, len(blocks)
            while time.monotonic() < deadline and not reader_task.done():
                if inflight + s.block > s.window:
                    wake.clear()
                    await wake.wait()
                    continue
                writer.write(blocks[i])
                i = (i + 1) % nblocks
                sent += s.block
                inflight += s.block
                await writer.drain()
            give_up = time.monotonic() + s.ack_timeout
            while inflight > 0 and not reader_task.done():
                wake.clear()
                await asyncio.wait_for(wake.wait(), max(0.01, give_up - time.monotonic()))
            if reader_task.done():
                reader_task.result()  # raises what ended the reader
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
            self.result.error(exc)
        finally:
            reader_task.cancel()
            self.result.sent += sent
            self.result.ok += acked
            self.result.t_end = max(self.result.t_end, time.monotonic())


def _quickack(sock: object) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        pass


def _share(total: int, workers: int, index: int) -> int:
    return total // workers + (1 if index < total % workers else 0)


async def _worker_main(spec: LoadSpec, index: int, start: Any, stop: Any, results: Any) -> None:
    w = _Worker(spec, index)
    loop = asyncio.get_running_loop()
    wait_start = lambda: loop.run_in_executor(None, start.wait)  # noqa: E731
    wait_stop = lambda: loop.run_in_executor(None, stop.wait)  # noqa: E731
    if spec.mode == "connect":
        for n in range(len(spec.devices)):  # load certificates before the window opens
            w.context(n)
        results.put(("ready", index, 0))
        await wait_start()
        w.result.t_start, cpu0 = time.monotonic(), _cpu_now()
        await w.connect_mode(_share(spec.count, spec.workers, index))
        w.result.t_end, w.result.cpu_s = time.monotonic(), _cpu_now() - cpu0
        results.put(("result", index, w.result))
        return
    share = _share(spec.clients, spec.workers, index)
    writers_conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    if spec.mode == "storm":
        for n in range(min(share, len(spec.devices))):
            w.context(n)
        sessions = await w.warm_up(share) if spec.resume else {}
        results.put(("ready", index, len(sessions)))
        await wait_start()
        w.result.t_start, cpu0 = time.monotonic(), _cpu_now()
        clients = await w.storm_mode(share, w.result.t_start + spec.duration, sessions)
        w.result.t_end, w.result.cpu_s = time.monotonic(), _cpu_now() - cpu0
        results.put(("result", index, w.result))
        await wait_stop()
        for client in clients:
            try:
                await client.send(mqttwire.DISCONNECT)
            except (OSError, ssl.SSLError):
                pass
            client.close()
        return
    if spec.mode == "idle":
        writers = await w.idle_mode(share)
        results.put(("ready", index, w.result))
        await wait_stop()
        await asyncio.gather(*(w.close(x) for x in writers))
        results.put(("result", index, w.result))
        return
    # publish
    payload = b"x" * spec.payload_size
    nblocks = max(2, (2 * spec.window) // spec.block + 2) if spec.qos else 1
    blocks = mqttwire.publish_blocks(spec.topic, payload, qos=spec.qos, block=spec.block,
                                     blocks=nblocks)
    if not spec.qos:
        blocks = [b + mqttwire.PINGREQ for b in blocks]
    for n in range(share):
        try:
            writers_conns.append(await w.open(index * 100000 + n))
        except (OSError, ssl.SSLError, ConnectionError, asyncio.IncompleteReadError) as exc:
            w.result.error(exc)
    results.put(("ready", index, len(writers_conns)))
    await wait_start()
    w.result.t_start, cpu0 = time.monotonic(), _cpu_now()
    deadline = w.result.t_start + spec.duration
    await asyncio.gather(*(w.publish_one(r, wr, blocks, deadline) for r, wr in writers_conns))
    w.result.cpu_s = _cpu_now() - cpu0
    results.put(("result", index, w.result))
    await wait_stop()
    await asyncio.gather(*(w.close(wr) for _, wr in writers_conns))


def _worker_entry(spec: LoadSpec, index: int, start: Any, stop: Any, results: Any) -> None:
    if spec.cpus:
        os.sched_setaffinity(0, spec.cpus)
    try:
        asyncio.run(_worker_main(spec, index, start, stop, results))
    except BaseException as exc:  # report, so the coordinator never waits forever
        results.put(("crash", index, f"{type(exc).__name__}: {exc}"))
        raise


class LoadError(RuntimeError):
    """A worker crashed or never reported."""


class LoadRun:
    """Workers for one spec. ``wait_ready`` → ``go`` → ``wait_results`` → ``finish``."""

    def __init__(self, spec: LoadSpec) -> None:
        ctx = mp.get_context("spawn")
        self.spec = spec
        self.start = ctx.Event()
        self.stop = ctx.Event()
        self.results = ctx.Queue()
        self.procs = [
            ctx.Process(target=_worker_entry, args=(spec, i, self.start, self.stop, self.results),
                        daemon=True)
            for i in range(spec.workers)
        ]
        for p in self.procs:
            p.start()
        self.ready: dict[int, Any] = {}
        self._results: dict[int, WorkerResult] = {}

    def _collect(self, kind: str, into: dict[int, Any], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(into) < len(self.procs):
            left = deadline - time.monotonic()
            if left <= 0:
                raise LoadError(f"load generator: {len(into)}/{len(self.procs)} workers "
                                f"reported {kind!r} in {timeout:.0f} s")
            try:
                msg, index, value = self.results.get(timeout=min(left, 1.0))
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in self.procs):
                    raise LoadError("load generator worker died") from None
                continue
            if msg == "crash":
                raise LoadError(f"load generator worker {index}: {value}")
            if msg == kind:
                into[index] = value

    def wait_ready(self, timeout: float = 300) -> dict[int, Any]:
        self._collect("ready", self.ready, timeout)
        return self.ready

    def go(self) -> None:
        self.start.set()

    def wait_results(self, timeout: float) -> LoadResult:
        self._collect("result", self._results, timeout)
        rs = list(self._results.values())
        errors: dict[str, int] = {}
        for r in rs:
            for k, v in r.errors.items():
                errors[k] = errors.get(k, 0) + v
        starts = [r.t_start for r in rs if r.t_start]
        ends = [r.t_end for r in rs if r.t_end]
        seconds = (max(ends) - min(starts)) if starts and ends else 0.0
        return LoadResult(
            ok=sum(r.ok for r in rs), sent=sum(r.sent for r in rs),
            failed=sum(r.failed for r in rs), errors=errors, seconds=seconds,
            loadgen_cpu_s=sum(r.cpu_s for r in rs), resumed=sum(r.resumed for r in rs),
        )

    def finish(self, timeout: float = 60) -> None:
        self.stop.set()
        self.start.set()
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.join(max(0.1, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join(5)

    def __enter__(self) -> LoadRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()
