"""Fixtures for the HTTP API over real sockets: a real SQLite store, ingest, a gateway with
its MQTT listener and the HTTPS listener, all in-process on 127.0.0.1 port 0, and clients
holding certificates made by our own `ca` (helpers in httphelpers.py)."""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from httphelpers import Client, client_context

from ca import CAHome
from ca.keys import generate_key, private_key_pem
from ca.profiles import build_operator
from gateway.app import Gateway
from gateway.config import load_config
from gateway.http import BarList, GatewayHooks, HttpLimits, gateway_samples, http_tls, serve_http
from gateway.http.server import HttpStatistics
from gateway.ingest import Ingest
from gateway.logs import EventLog
from gateway.server import serve_mqtt
from gateway.storage import open_sqlite_store


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
    gateway = Gateway(config, log=log, ingest=ingest, status=store)
    mqtt = await nursery.start(serve_mqtt, gateway)
    bars = BarList(data / "barred.json")
    gateway.bars = bars
    stats = HttpStatistics()
    hooks = GatewayHooks(store=store, ingest=ingest, gateway=gateway, bars=bars)
    http = await nursery.start(lambda task_status: serve_http(
        ("127.0.0.1", 0), http_tls(gateway.tls), store, hooks=hooks, bars=bars,
        metrics=lambda: gateway_samples(gateway, store, ingest, stats),
        limits=limits or HttpLimits(),
        log=log, stats=stats, task_status=task_status))
    return Env(home, store, ingest, gateway, bars, http, mqtt, data, stats, stream)


@pytest.fixture
async def env(ca_home: CAHome, tmp_path: Path):
    data = tmp_path / "data"
    async with open_sqlite_store(data) as store:
        async with trio.open_nursery() as nursery:
            yield await start_env(ca_home, data, nursery, store)
            nursery.cancel_scope.cancel()


@pytest.fixture
def foreign_operator(foreign_ca, tmp_path: Path) -> tuple[Path, Path]:
    """An operator certificate of the same shape, signed by a CA the gateway does not trust."""
    key = generate_key()
    cert = build_operator(key.public_key(), issuer=foreign_ca.issuing, name="test-operator",
                          now=dt.datetime.now(dt.UTC))
    from cryptography.hazmat.primitives.serialization import Encoding
    crt = tmp_path / "foreign-operator.crt"
    crt.write_bytes(cert.public_bytes(Encoding.PEM) + foreign_ca.issuing.cert.public_bytes(
        Encoding.PEM))
    k = tmp_path / "foreign-operator.key"
    k.write_bytes(private_key_pem(key))
    k.chmod(0o600)
    return crt, k
