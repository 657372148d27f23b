"""The HTTPS API takes the gateway's verified revoked set: a foreign CA's CRL revokes no
operator, and a revocation applies while the TLS context cannot be rebuilt."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from httphelpers import start_env

from ca import CAHome, build_hierarchy
from ca.crl import RevokedEntry, build_crl
from gateway.revocation import reload_tls
from gateway.storage import open_sqlite_store


@pytest.fixture
async def own_env(tmp_path: Path):
    """A gateway and its API on a CA home of their own (these tests rewrite its files)."""
    home = CAHome.init(tmp_path / "home", passphrase=None, name="http revocation")
    home.issue_server(home.path / "server", dns=["localhost"], ips=["127.0.0.1"])
    home.issue_operator(home.path / "operator", name="test-operator")
    data = tmp_path / "data"
    try:
        async with open_sqlite_store(data) as store:
            async with trio.open_nursery() as nursery:
                yield await start_env(home, data, nursery, store)
                nursery.cancel_scope.cancel()
    finally:
        home.close()


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _operator_serial(env) -> int:
    cert = x509.load_pem_x509_certificate((env.home.path / "operator" / "operator.crt")
                                          .read_bytes())
    return cert.serial_number


async def test_a_foreign_crl_listing_an_operator_revokes_nothing(own_env):
    env = own_env
    keep_alive = env.operator()
    assert (await keep_alive.get("/api/v1/networks")).status == 200
    now = dt.datetime.now(dt.UTC)
    foreign = build_hierarchy(name="http revocation", now=now)  # even our CA's very names
    crl = build_crl(foreign.issuing, [RevokedEntry(_operator_serial(env), now)], now=now,
                    number=5)
    path = env.home.path / "crl.pem"
    _replace(path, path.read_bytes() + crl.public_bytes(Encoding.PEM))
    assert reload_tls(env.gateway, "test")  # what the file watcher does on the change
    assert "crl_ignored" in env.log.getvalue()
    assert (await keep_alive.get("/api/v1/networks")).status == 200
    assert (await env.operator().get("/api/v1/networks")).status == 200


async def test_an_operator_revoked_while_the_server_key_is_unusable_is_refused(own_env):
    env = own_env
    keep_alive = env.operator()
    assert (await keep_alive.get("/api/v1/networks")).status == 200
    _replace(env.home.path / "server" / "server.key", b"mid-rotation")
    env.home.revoke(_operator_serial(env))
    assert reload_tls(env.gateway, "test")  # the revoked set applies; the context stays old
    assert "tls_reload_failed" in env.log.getvalue()
    answer = await keep_alive.get("/api/v1/networks")
    assert answer.status == 403 and answer.error_code == "certificate_revoked"
    # A new connection passes the old context's handshake, then meets the new set.
    answer = await env.operator().get("/api/v1/networks")
    assert answer.status == 403 and answer.error_code == "certificate_revoked"
