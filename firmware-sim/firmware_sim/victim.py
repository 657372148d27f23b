"""What the resource attacks are judged by: a healthy device of another network, and the
gateway's memory and disk, sampled while an attack runs.

`Victim` is one paho client in its own thread: it declares a thermostat, then publishes one
QoS 1 report every `period` seconds and reconnects every `reconnect` seconds, recording each
PUBACK latency and each connect time (TCP + TLS + CONNACK) under the phase label the harness
sets (`baseline:<attack>`, `during:<attack>`). A PUBACK or CONNACK that never comes is recorded
as its deadline (`WAIT_S`), so a frozen gateway shows as the deadline, not as a gap.

`Sampler` reads the gateway's VmRSS (/proc/PID/status) and the bytes on disk of a folder
(every file, recursively) a few times a second, under the same phase labels.
"""

from __future__ import annotations

import math
import os
import ssl
import threading
import time
from collections import defaultdict
from pathlib import Path

import paho.mqtt.client as paho

from .bundle import Bundle

WAIT_S = 30.0  # a PUBACK or CONNACK later than this is recorded as this (and the link reset)
MODEL = (b'{"devices": [{"name": "thermostat", "values": [{"name": "temperature", '
         b'"permission": "r", "number": {"min": -40, "max": 125}}]}]}')


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of `values`; NaN for none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class Victim:
    """The healthy device of another network; `samples[kind][phase]` are seconds."""

    def __init__(self, bundle: Bundle, host: str, port: int, *, period: float = 0.25,
                 reconnect: float = 2.0) -> None:
        self.bundle, self.host, self.port = bundle, host, port
        self.period, self.reconnect = period, reconnect
        self.phase = "warmup"
        self.samples: dict[str, dict[str, list[float]]] = {
            "puback": defaultdict(list), "connect": defaultdict(list)}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="victim", daemon=True)
        self._n = 0
        self._current: tuple[str, str, float] | None = None  # (kind, phase, start) in flight

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(WAIT_S + 5)

    def _client(self) -> tuple[paho.Client, threading.Event]:
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311,
                             client_id=f"victim-{os.getpid()}", clean_session=True)
        client.tls_set(ca_certs=str(self.bundle.ca), certfile=str(self.bundle.cert),
                       keyfile=str(self.bundle.key), cert_reqs=ssl.CERT_REQUIRED)
        connected = threading.Event()
        client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
        return client, connected

    def _connect(self) -> paho.Client | None:
        client, connected = self._client()
        phase, start = self.phase, time.monotonic()
        self._current = ("connect", phase, start)
        try:
            client.connect(self.host, self.port, keepalive=60)
            client.loop_start()
            ok = connected.wait(WAIT_S)
        except (OSError, ssl.SSLError) as exc:
            self.errors.append(f"connect: {exc}")
            ok = False
        took = time.monotonic() - start
        self._current = None
        self.samples["connect"][phase].append(took if ok else max(took, WAIT_S))
        if not ok:
            client.loop_stop()
            client.disconnect()
            self._stop.wait(min(1.0, self.period * 4))
            return None
        return client

    def _publish(self, client: paho.Client, topic: str, payload: bytes) -> bool:
        phase, start = self.phase, time.monotonic()
        self._current = ("puback", phase, start)
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(WAIT_S)
        ok = info.is_published()
        self._current = None
        self.samples["puback"][phase].append(time.monotonic() - start if ok else WAIT_S)
        return ok

    def _run(self) -> None:
        declared = False
        while not self._stop.is_set():
            client = self._connect()
            if client is None:
                continue
            try:
                if not declared:
                    declared = self._publish(client, "model", MODEL)
                    self.samples["puback"]["warmup"].append(0.0)
                until = time.monotonic() + self.reconnect
                while time.monotonic() < until and not self._stop.is_set():
                    self._n += 1
                    tick = time.monotonic()
                    if not self._publish(client, "report/thermostat/temperature",
                                         str(20 + self._n % 10).encode()):
                        break  # reconnect: a frozen link is not waited on twice
                    self._stop.wait(max(0.0, self.period - (time.monotonic() - tick)))
            finally:
                client.disconnect()
                client.loop_stop()

    def figures(self, phase: str) -> dict[str, float | int]:
        """p50/p99 of PUBACK and connect seconds in `phase`, and their counts.

        A PUBACK or CONNACK still awaited, started in `phase`, counts with its wait so far
        (a lower bound): a gateway frozen past the end of the phase is not a missing sample.
        """
        pub, con = list(self.samples["puback"][phase]), list(self.samples["connect"][phase])
        current = self._current
        if current is not None and current[1] == phase:
            (pub if current[0] == "puback" else con).append(time.monotonic() - current[2])
        return {"puback_p50": percentile(pub, 50), "puback_p99": percentile(pub, 99),
                "pubacks": len(pub), "puback_timeouts": sum(1 for x in pub if x >= WAIT_S),
                "connect_p50": percentile(con, 50), "connect_p99": percentile(con, 99),
                "connects": len(con)}


def rss_bytes(pid: int) -> int | None:
    """VmRSS of `pid` in bytes, or None when the process is gone or unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


WAL_SUFFIXES = ("-wal", "-shm")
"""SQLite's write-ahead log and its index: bounded by the gateway's checkpoints, not by what
was stored, so sampled apart from the data ("wal")."""


def disk_bytes(folder: Path, wal: bool = False) -> int:
    """Bytes on disk (allocated blocks) of the files under `folder`: the WAL files only
    (`wal`), or every other file."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if name.endswith(WAL_SUFFIXES) != wal:
                continue
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass  # a file removed while walking (a WAL checkpoint, a rotated log)
    return total


class Sampler:
    """RSS and folder sizes every `every` seconds; `peak(kind, phase)`, `first(...)`."""

    def __init__(self, pid: int | None, folders: dict[str, Path], every: float = 0.25) -> None:
        self.pid, self.folders, self.every = pid, folders, every
        self.phase = "warmup"
        self.samples: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def sample(self) -> None:
        phase = self.phase
        if self.pid is not None and (rss := rss_bytes(self.pid)) is not None:
            self.samples["rss"][phase].append(rss)
        for kind, folder in self.folders.items():
            if folder.is_dir():
                self.samples[kind][phase].append(disk_bytes(folder))
                self.samples[f"{kind}_wal"][phase].append(disk_bytes(folder, wal=True))
            else:
                self.samples[kind][phase].append(folder.stat().st_size if folder.exists() else 0)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def last(self, kind: str, phase: str) -> int | None:
        values = self.samples[kind].get(phase) or []
        return values[-1] if values else None

    def peak(self, kind: str, phase: str) -> int | None:
        values = self.samples[kind].get(phase) or []
        return max(values) if values else None
