"""Cluster nodes as real `fleet-gateway serve --store postgresql://...` processes, and paho
devices driven from worker threads (helpers for test_cluster_processes.py)."""

from __future__ import annotations

import http.client
import json
import queue
import shutil
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as paho

WAIT = 30.0  # a deadline for "never happened", not a timing assertion
EXE = shutil.which("fleet-gateway", path=str(Path(sys.executable).parent)) or "fleet-gateway"


class NodeProcess:
    """A `fleet-gateway serve` child; its JSON log lines (stderr) read by a thread."""

    def __init__(self, ca_home: Path, url: str, name: str, *extra: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [EXE, "serve", "--ca-home", str(ca_home), "--mqtt", "127.0.0.1:0",
             "--http", "127.0.0.1:0", "--store", url, *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[dict] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            try:
                record = json.loads(line)
            except ValueError:
                record = {"event": "<text>", "line": line}
            with self._cond:
                self.lines.append(record)
                self._cond.notify_all()
        with self._cond:
            self.lines.append({"event": "<eof>"})
            self._cond.notify_all()

    def line(self, event: str, **fields) -> dict:
        """The first log line `event` with `fields` (waits for it; fails at EOF)."""
        def found():
            return next((r for r in self.lines if r["event"] == event
                         and all(k in r and (v is None or r[k] == v)
                                 for k, v in fields.items())), None)
        with self._cond:
            self._cond.wait_for(lambda: found() or self.lines[-1:] == [{"event": "<eof>"}],
                                timeout=WAIT)
            record = found()
        assert record is not None, (event, fields, self.lines[-20:])
        return record

    def address(self, key: str) -> tuple[str, int]:
        host, port = self.line("listening", **{key: None})[key].rsplit(":", 1)
        return host, int(port)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(WAIT)


class Device:
    """A paho device (MQTT 3.1.1, our certificate) whose callbacks feed queues."""

    def __init__(self, bundle, port: int, client_id: str, *, clean: bool = True) -> None:
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=clean, protocol=paho.MQTTv311,
                                  reconnect_on_failure=False)
        self.client.tls_set(str(bundle.ca_path), str(bundle.cert_path), str(bundle.key_path))
        self.port = port
        self.messages: queue.Queue = queue.Queue()
        self.connacks: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.gone = threading.Event()
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_connect = lambda c, u, flags, rc, p: self.connacks.put((flags, rc))
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.subacks.put(codes)
        self.client.on_disconnect = lambda *a: self.gone.set()

    def connect(self):
        """(flags, reason code) of the CONNACK."""
        self.client.connect("127.0.0.1", self.port, 60)
        self.client.loop_start()
        return self.connacks.get(timeout=WAIT)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self.client.subscribe(topic, qos)
        self.subacks.get(timeout=WAIT)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos)
        info.wait_for_publish(WAIT)
        assert info.is_published()

    def message(self):
        return self.messages.get(timeout=WAIT)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def api(ca_home, address: tuple[str, int], method: str, path: str, body=None):
    """(status, JSON document) of one operator request to the node's HTTPS API."""
    ctx = ssl.create_default_context(cafile=str(ca_home.path / "root.crt"))
    operator = ca_home.path / "operator"
    ctx.load_cert_chain(str(operator / "operator.crt"), str(operator / "operator.key"))
    conn = http.client.HTTPSConnection(*address, context=ctx, timeout=WAIT)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, data, {"Content-Type": "application/json"})
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read() or b"null")
    finally:
        conn.close()
