"""Fixtures for the console over real sockets: the HTTP test environment (a real SQLite
store, ingest, the MQTT and HTTPS listeners on 127.0.0.1 port 0) with the console wired
in as `fleet-gateway serve` wires it (gateway.console.wiring)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

sys.path.insert(0, str(Path(__file__).parent.parent / "http"))

from consolehelpers import start_console_env  # noqa: E402

from gateway.storage import open_sqlite_store  # noqa: E402


@pytest.fixture
async def cenv(ca_home, tmp_path: Path):
    data = tmp_path / "data"
    async with open_sqlite_store(data) as store:
        async with trio.open_nursery() as nursery:
            yield await start_console_env(ca_home, data, nursery, store)
            nursery.cancel_scope.cancel()
