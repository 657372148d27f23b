"""Fixtures for cluster tests: gateway nodes in-process on one real PostgreSQL (the
`postgres_url` fixture), each with its own MQTT port on 127.0.0.1:0, and a PKI from our own
`ca` (helpers in clusterhelpers.py, which reuses the gateway tests' gwhelpers)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "gateway"))

from gwhelpers import PKI  # noqa: E402

from ca.store import CAHome  # noqa: E402


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> PKI:
    tmp = tmp_path_factory.mktemp("cluster-pki")
    path = tmp / "ca-home"
    home = CAHome.init(path, passphrase=None, name="cluster tests")
    home.issue_server(path / "server", dns=["localhost"], ips=["127.0.0.1"])
    return PKI(home, path, path / "root.crt", tmp)
