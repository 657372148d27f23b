"""Fixtures for the HTTP API over real sockets: a real SQLite store, ingest, a gateway with
its MQTT listener and the HTTPS listener, all in-process on 127.0.0.1 port 0, and clients
holding certificates made by our own `ca` (helpers in httphelpers.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import trio
from httphelpers import start_env

from ca import CAHome
from ca.keys import generate_key, private_key_pem
from ca.profiles import build_operator
from gateway.storage import open_sqlite_store


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
