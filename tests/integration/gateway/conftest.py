"""Fixtures for the gateway over real sockets: a PKI from our own `ca` and a gateway run
in-process on 127.0.0.1 port 0 (helpers in gwhelpers.py)."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pytest
from gwhelpers import PKI, Creds, LogRecords, Running

from ca.store import CAHome
from gateway.app import Gateway
from gateway.config import load_config
from gateway.logs import EventLog
from gateway.server import serve_mqtt


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> PKI:
    tmp = tmp_path_factory.mktemp("gateway-pki")
    path = tmp / "ca-home"
    home = CAHome.init(path, passphrase=None, name="gateway tests")
    home.issue_server(path / "server", dns=["localhost"], ips=["127.0.0.1"])
    return PKI(home, path, path / "root.crt", tmp)


@pytest.fixture(scope="session")
def net_a(pki) -> Creds:
    return pki.device()


@pytest.fixture(scope="session")
def net_a2(pki, net_a) -> Creds:
    """A second certificate of network A (another device of the same network)."""
    return pki.device(network=uuid.UUID(net_a.network))


@pytest.fixture(scope="session")
def net_b(pki) -> Creds:
    return pki.device()


@pytest.fixture
def start_gateway(nursery, pki):
    """`await start_gateway(**config_overrides)` runs a gateway on 127.0.0.1:0 in-process
    (`clock=`: its UTC now, for the CRL's freshness)."""

    async def start(ca_home: Path | None = None, ingest=None, clock=None, wall_clock=None,
                    **overrides) -> Running:
        config = load_config(
            None, {"ca_home": ca_home or pki.path, "mqtt": "127.0.0.1:0", **overrides}
        )
        logs = LogRecords()
        log = EventLog(io.StringIO(), truncate_ips=config.truncate_ip)
        log.add_listener(logs)
        gateway = Gateway(config, log=log, ingest=ingest, clock=clock,
                          **({"wall_clock": wall_clock} if wall_clock else {}))
        host, port = await nursery.start(serve_mqtt, gateway)
        return Running(gateway, host, port, logs)

    return start
