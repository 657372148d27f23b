"""Helpers for the HTTP API's integration tests: the environment under test (`start_env`),
a blocking HTTPS client run in a thread, a raw TLS socket for wire-level tests, a paho
device, a seeded network."""

from __future__ import annotations

import datetime as dt
import http.client
import io
import json
import socket
import ssl
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import trio

from ca import CAHome
from gateway.app import Gateway
from gateway.audit import AuditTrail
from gateway.config import load_config
from gateway.http import BarList, GatewayHooks, HttpLimits, gateway_samples, http_tls, serve_http
from gateway.http.certs import InventoryLookup
from gateway.http.server import HttpStatistics
from gateway.ingest import Ingest
from gateway.logs import EventLog
from gateway.server import serve_mqtt
from gateway.storage.ledger import LEDGER_FILE, ErasureLedger

MODEL = {"devices": [{"name": "thermo", "description": "hall", "values": [
    {"name": "temp", "permission": "r", "number": {"min": -40, "max": 125, "step": 0.5}},
    {"name": "target", "permission": "rw", "number": {"min": 5, "max": 30, "step": 0.5}},
    {"name": "label", "permission": "rw", "string": {"max": 8}},
]}]}
T0 = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_code(self) -> str:
        doc = self.json
        assert set(doc) == {"error"} and set(doc["error"]) == {"code", "message"}, doc
        return doc["error"]["code"]


def client_context(root: Path, cert: Path | None = None, key: Path | None = None
                   ) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(root))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


@dataclass
class Client:
    """http.client over TLS, one keep-alive connection, each call run in a worker thread."""

    host: str
    port: int
    context: ssl.SSLContext
    _conn: http.client.HTTPSConnection | None = field(default=None, repr=False)

    def _request_sync(self, method: str, path: str, body: Any = None,
                      headers: dict[str, str] | None = None) -> Answer:
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(self.host, self.port,
                                                     context=self.context, timeout=30)
        raw = body if isinstance(body, bytes | None) else json.dumps(body).encode()
        hdrs = dict(headers or {})
        if body is not None and not isinstance(body, bytes):
            hdrs.setdefault("content-type", "application/json")
        try:
            self._conn.request(method, path, raw, hdrs)
            resp = self._conn.getresponse()
            data = resp.read()
        except Exception:
            self.close_sync()
            raise
        if resp.will_close:
            self.close_sync()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)

    async def request(self, method: str, path: str, body: Any = None, **kw) -> Answer:
        return await trio.to_thread.run_sync(
            lambda: self._request_sync(method, path, body, **kw))

    async def get(self, path: str) -> Answer:
        return await self.request("GET", path)

    def close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def raw_exchange(host: str, port: int, ctx: ssl.SSLContext, data: bytes,
                 *, read_until_close: bool = True, timeout: float = 20.0) -> bytes:
    """Send raw bytes over TLS; return everything received until the server closes."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        with ctx.wrap_socket(sock, server_hostname=host) as tls:
            tls.sendall(data)
            chunks = []
            while True:
                try:
                    part = tls.recv(65536)
                except (ssl.SSLEOFError, ConnectionResetError):
                    break
                if not part:
                    break
                chunks.append(part)
            return b"".join(chunks)


def parse_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a byte stream of HTTP/1.1 responses (Content-Length or chunked)."""
    out = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        if "content-length" in headers:
            n = int(headers["content-length"])
            body, data = data[:n], data[n:]
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, data = data.partition(b"\r\n")
                size = int(size_line, 16)
                body, data = body + data[:size], data[size + 2:]
                if size == 0:
                    break
        else:
            body, data = data, b""
        out.append((status, headers, body))
    return out


async def seed_network(ingest: Any, network: uuid.UUID, reports: int = 5) -> dict:
    """Declare MODEL for `network` and store `reports` temp readings, one minute apart."""
    *_pieces, reply = await ingest.handle(network, "dev", "model", json.dumps(MODEL).encode(),
                                          1, T0)
    assert reply.topic == "model/accepted"
    tree = (await ingest._store.get_tree(network)).to_json()  # the whole tree, as stored
    for start in range(0, reports, 100):  # batches as a device would send them
        batch = {"reports": [
            {"data": i % 100, "timestamp": (T0 + timedelta(minutes=i)).isoformat()}
            for i in range(start, min(reports, start + 100))]}
        replies = await ingest.handle(network, "dev", "report/thermo/temp",
                                      json.dumps(batch).encode(), 1, T0 + timedelta(days=30))
        assert replies == [], replies
    return tree


async def committed_so_far(store: Any, network: uuid.UUID) -> None:
    """Return once every write queued so far for `network` is committed.

    Connection status is queued and never waited for; a write that is waited for (clearing a
    retained topic nobody set) goes into the same per-network FIFO queue behind it, so its
    commit covers the earlier writes."""
    await store.set_retained(network, "$barrier", b"", 0, datetime.now(UTC))


def value_uuid(tree: dict, name: str) -> str:
    for device in tree["devices"]:
        for value in device["values"]:
            if value["name"] == name:
                return value["uuid"]
    raise KeyError(name)


class Device:
    """A real paho-mqtt device in its own network thread (callbacks feed queues)."""

    def __init__(self, host: str, port: int, bundle: Any, client_id: str = "dev") -> None:
        import queue
        import threading

        import paho.mqtt.client as paho

        self.host, self.port = host, port
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=paho.MQTTv311)
        self.client.tls_set(str(bundle.ca_path), str(bundle.cert_path), str(bundle.key_path))
        self.messages: queue.Queue = queue.Queue()
        self.events: queue.Queue = queue.Queue()
        self.disconnected = threading.Event()
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_connect = lambda c, u, f, rc, p: self.events.put(("connack", rc))
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.events.put(("suback", codes))
        self.client.on_disconnect = lambda *a: self.disconnected.set()

    async def connect(self) -> Any:
        def run():
            self.client.connect(self.host, self.port, 30)
            self.client.loop_start()
            return self.events.get(timeout=20)
        return await trio.to_thread.run_sync(run)

    async def connect_refused(self) -> bool:
        """Try to connect; True when the gateway closed the connection without a CONNACK."""
        def run():
            try:
                self.client.connect(self.host, self.port, 30)
            except OSError:
                return True
            self.client.loop_start()
            try:
                return self.disconnected.wait(20) and self.events.empty()
            finally:
                self.client.loop_stop()
        return await trio.to_thread.run_sync(run)

    async def subscribe(self, topic: str, qos: int = 1) -> Any:
        self.client.subscribe(topic, qos)
        return await trio.to_thread.run_sync(lambda: self.events.get(timeout=20))

    async def message(self) -> Any:
        return await trio.to_thread.run_sync(lambda: self.messages.get(timeout=20))

    async def wait_disconnected(self) -> bool:
        return await trio.to_thread.run_sync(lambda: self.disconnected.wait(20))

    async def close(self) -> None:
        def run():
            self.client.disconnect()
            self.client.loop_stop()
        await trio.to_thread.run_sync(run)


# -- the environment under test ---------------------------------------------------------

@dataclass
class Env:
    home: CAHome
    store: Any
    ingest: Ingest
    gateway: Gateway
    bars: BarList
    http: tuple[str, int]
    mqtt: tuple[str, int]
    data: Path
    stats: HttpStatistics
    log: io.StringIO

    @property
    def root(self) -> Path:
        return self.home.path / "root.crt"

    def client(self, cert: Path | None = None, key: Path | None = None) -> Client:
        return Client(self.http[0], self.http[1], client_context(self.root, cert, key))

    @staticmethod
    def store_now():
        return dt.datetime.now(dt.UTC)

    def operator(self) -> Client:
        op = self.home.path / "operator"
        return self.client(op / "operator.crt", op / "operator.key")


async def start_env(home: CAHome, data: Path, nursery: trio.Nursery, store: Any,
                    limits: HttpLimits | None = None) -> Env:
    config = load_config(None, {"ca_home": home.path, "mqtt": "127.0.0.1:0", "data": data})
    stream = io.StringIO()
    log = EventLog(stream, truncate_ips=True)
    ingest = Ingest(store)
    bars = BarList(data / "barred.json")
    gateway = Gateway(config, log=log, ingest=ingest, status=store, bars=bars)
    mqtt = await nursery.start(serve_mqtt, gateway)
    limits = limits or HttpLimits()
    stats = HttpStatistics(limits, gateway.metrics.http)
    audit = AuditTrail(store, log=log)
    hooks = GatewayHooks(store=store, ingest=ingest, gateway=gateway, bars=bars,
                         ledger=ErasureLedger(data / LEDGER_FILE), audit=audit)
    http = await nursery.start(lambda task_status: serve_http(
        ("127.0.0.1", 0), http_tls(gateway.tls), store, hooks=hooks, bars=bars,
        certificates=InventoryLookup(home.path),
        metrics=lambda: gateway_samples(gateway, store, ingest, stats),
        limits=limits,
        log=log, stats=stats, audit=audit, task_status=task_status))
    return Env(home, store, ingest, gateway, bars, http, mqtt, data, stats, stream)
