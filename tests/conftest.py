"""Shared PKI fixtures, built with our own `ca` package (never committed keys).

- `ca_home` (session): an unencrypted CA home in a tmp folder, with a server certificate for
  DNS localhost + IP 127.0.0.1 at `<home>/server/server.crt|.key` and an operator certificate
  ("test-operator") at `<home>/operator/operator.crt|.key|ca.crt`.
- `foreign_ca` (session): an independent root + issuing CA (`ca.Hierarchy`) that our gateway
  must not trust.
- `make_device(network=None, days=365)` (function): a fresh, recorded device bundle.
- `device_bundle` (function): one fresh device bundle.
- `make_odd_device(kind, network=None)` (function): an unrecorded device-shaped bundle whose
  certificate is "expired", "not-yet-valid", "self-signed" or "foreign-ca".
- `postgres_server` (session): a real PostgreSQL server (initdb in a temporary folder, run
  as an unprivileged user, unix socket only); `postgres_url` (function): a fresh database.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ca import CAHome, DeviceBundle, Hierarchy, build_hierarchy, write_bundle
from ca.keys import generate_key
from ca.profiles import build_device, build_self_signed_device
from gateway.storage.postgres.local_server import LocalPostgres, find_bin_dir


@pytest.fixture(scope="session")
def ca_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CAHome]:
    home = CAHome.init(
        tmp_path_factory.mktemp("ca") / "home", name="fleetgate test", passphrase=None
    )
    home.issue_server(home.path / "server", dns=["localhost"], ips=["127.0.0.1", "::1"])
    home.issue_operator(home.path / "operator", name="test-operator")
    yield home
    home.close()


@pytest.fixture(scope="session")
def foreign_ca() -> Hierarchy:
    return build_hierarchy(name="someone else", now=dt.datetime.now(dt.UTC))


@pytest.fixture
def make_device(ca_home: CAHome, tmp_path: Path) -> Callable[..., DeviceBundle]:
    def make(*, network: uuid.UUID | None = None, days: int = 365) -> DeviceBundle:
        return ca_home.issue_devices(tmp_path / "devices", network=network, days=days)[0]

    return make


@pytest.fixture
def device_bundle(make_device: Callable[..., DeviceBundle]) -> DeviceBundle:
    return make_device()


@pytest.fixture
def make_odd_device(
    ca_home: CAHome, foreign_ca: Hierarchy, tmp_path: Path
) -> Callable[..., DeviceBundle]:
    def make(kind: str, *, network: uuid.UUID | None = None) -> DeviceBundle:
        net = network or uuid.uuid4()
        now = dt.datetime.now(dt.UTC)
        key = generate_key()
        out = tmp_path / f"odd-{kind}"
        issuer, chain, root = ca_home.issuer, [ca_home.issuing_cert], ca_home.root_cert
        if kind == "expired":
            cert = build_device(key.public_key(), issuer=issuer, network=net, now=now,
                                not_before=now - dt.timedelta(days=30),
                                not_after=now - dt.timedelta(days=1))
        elif kind == "not-yet-valid":
            cert = build_device(key.public_key(), issuer=issuer, network=net, now=now,
                                not_before=now + dt.timedelta(days=1),
                                not_after=now + dt.timedelta(days=30))
        elif kind == "self-signed":
            cert, chain = build_self_signed_device(key, network=net, now=now), []
        elif kind == "foreign-ca":
            cert = build_device(key.public_key(), issuer=foreign_ca.issuing, network=net,
                                now=now)
            chain, root = [foreign_ca.issuing.cert], foreign_ca.root.cert
        else:
            raise ValueError(f"unknown odd device kind {kind!r}")
        return write_bundle(out, key=key, cert=cert, chain=chain, ca_cert=root)

    return make


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    """A real PostgreSQL server for the whole run, on a unix socket in a temporary folder
    (outside pytest's private tmp tree: the unprivileged server user must reach it)."""
    if find_bin_dir() is None:
        pytest.skip("PostgreSQL is not installed: Debian package postgresql (make test "
                    "installs it)")
    server = LocalPostgres(Path(tempfile.mkdtemp(prefix="fleetgate-pg-")))
    server.start()
    yield server
    server.remove()


@pytest.fixture
def postgres_url(postgres_server: LocalPostgres) -> str:
    """The URL of a fresh, empty database on `postgres_server`, one per test."""
    return postgres_server.create_database(f"t_{uuid.uuid4().hex}")
