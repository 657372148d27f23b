"""A real gateway (in-process, 127.0.0.1, real TLS, ingest into a real SQLite file) for the
simulator's tests, and helpers to drive `SimDevice`s from trio tests.

The tests import `gateway` to run it; the simulator itself never does.
"""

from __future__ import annotations

import dataclasses
import io
import json
import queue
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
from firmware_sim.bundle import load_bundle
from firmware_sim.device import Backoff, SimDevice
from firmware_sim.loop import start_loop

from ca.store import CAHome
from gateway.app import Gateway
from gateway.broker_state import Message
from gateway.config import load_config
from gateway.ingest import DEFAULT_LIMITS, Ingest
from gateway.logs import EventLog
from gateway.mqtt.packets import QoS
from gateway.server import serve_mqtt
from gateway.storage import open_sqlite_store

WAIT = 20.0  # a deadline for "never happened", not a timing assertion


class GatewayRunner:
    """Start, stop and restart (on the same port) a gateway with ingest and SQLite.

    While stopped, the port stays bound by a socket that does not listen: a device's
    connection is refused as by a gateway that is down, and the port cannot be handed to
    another socket of this busy machine (an outgoing connection's ephemeral port) before
    the restart binds it again (SO_REUSEADDR on both)."""

    def __init__(self, nursery: trio.Nursery, ca_home: Path, data: Path,
                 config: dict[str, Any] | None = None) -> None:
        self.nursery = nursery
        self.ca_home = ca_home
        self.data = data
        self.config = config or {}  # options beside ca_home and mqtt
        self.port = 0
        self.ingest: Ingest | None = None
        self.gateway: Gateway | None = None
        self._scope: trio.CancelScope | None = None
        self._done: trio.Event | None = None
        self._held: socket.socket | None = None  # the port, while stopped

    async def start(self) -> int:
        self._done = trio.Event()
        try:
            self.port = await self.nursery.start(self._serve, self._done)
        finally:
            if self._held is not None:
                self._held.close()
                self._held = None
        return self.port

    async def _serve(self, done: trio.Event, task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                async with open_sqlite_store(self.data) as store:
                    config = load_config(None, {"ca_home": self.ca_home,
                                                "mqtt": f"127.0.0.1:{self.port}",
                                                **self.config})
                    # As the composition root (gateway.app) builds it.
                    self.ingest = Ingest(store, limits=dataclasses.replace(
                        DEFAULT_LIMITS,
                        max_stored_bytes_per_network=config.max_stored_bytes_per_network))
                    self.gateway = Gateway(config, log=EventLog(io.StringIO(),
                                                                truncate_ips=True),
                                           ingest=self.ingest)
                    async with trio.open_nursery() as inner:
                        _host, port = await inner.start(serve_mqtt, self.gateway)
                        task_status.started(port)
                        await trio.sleep_forever()
        finally:
            done.set()

    async def stop(self) -> None:
        assert self._scope is not None and self._done is not None
        self._scope.cancel()
        await self._done.wait()
        held = socket.socket()
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.0.1", self.port))
        self._held = held

    async def control(self, value: str, data: str) -> None:
        """What the HTTP API does for POST /values/{uuid}/control."""
        import uuid

        assert self.ingest is not None and self.gateway is not None
        network, reply = await self.ingest.control(uuid.UUID(value), data, datetime.now(UTC))
        self.gateway.broker.publish(Message(f"{network}/{reply.topic}", reply.payload,
                                            QoS(reply.qos), reply.retain))

    async def history(self, value: str) -> list[Any]:
        import uuid

        assert self.ingest is not None
        return await self.ingest._store.history(uuid.UUID(value))


@pytest.fixture
async def gateway_runner(nursery, ca_home: CAHome, tmp_path: Path
                         ) -> AsyncIterator[GatewayRunner]:
    runner = GatewayRunner(nursery, ca_home.path, tmp_path / "var")
    await runner.start()
    yield runner
    if runner._held is not None:  # stopped by the test, never started again
        runner._held.close()


@dataclass
class Watched:
    """A SimDevice whose events land in a queue the test can wait on."""

    device: SimDevice
    events: queue.Queue = field(default_factory=queue.Queue)
    seen: list[tuple[str, dict]] = field(default_factory=list)

    def forget(self) -> None:
        """Later waits match only events that have not been seen yet."""
        self.seen.clear()

    async def wait(self, kind: str, timeout: float = WAIT, **match: Any) -> dict:
        def run() -> dict:
            deadline = time.monotonic() + timeout
            for k, f in self.seen:
                if k == kind and all(f.get(a) == b for a, b in match.items()):
                    return f
            while True:
                try:
                    k, f = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    others = [(k, f) for k, f in self.seen if k != "tick"][-15:]
                    raise AssertionError(f"no {kind} {match} event; saw {others}") from None
                self.seen.append((k, f))
                if k == kind and all(f.get(a) == b for a, b in match.items()):
                    return f
        return await trio.to_thread.run_sync(run)


@pytest.fixture
def sim_loop():
    loop, thread = start_loop()
    yield loop
    loop.stop()
    thread.join(10)
    loop.close()


@pytest.fixture
def sim_device(sim_loop, gateway_runner):
    """`sim_device(bundle_dir, **kw) -> Watched`, started; stopped at teardown."""
    made: list[SimDevice] = []

    def make(bundle_dir: Path, **kw: Any) -> Watched:
        kw.setdefault("backoff", Backoff(0.05, 0.5))
        watched: Watched
        device = SimDevice(load_bundle(bundle_dir), sim_loop, "127.0.0.1", gateway_runner.port,
                           on_event=lambda d, k, f: watched.events.put((k, f)), **kw)
        watched = Watched(device)
        made.append(device)
        device.start()
        return watched

    yield make
    for device in made:
        device.stop(drain=0)


def tree_uuids(tree: dict) -> dict[str, str]:
    out = {}
    for device in tree["network"]["devices"]:
        for value in device["values"]:
            out[f"{device['name']}/{value['name']}"] = value["uuid"]
    return out


def dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()
