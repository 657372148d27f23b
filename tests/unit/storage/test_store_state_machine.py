"""A Hypothesis state machine over the real store: declare, report, erase and restart in any
order; UUIDs stay what they were first given, reports are all there, erased means gone.

The store runs in a trio loop on a helper thread; rules call into it with
`trio.from_thread.run`, so a rule can also close and reopen the store (a restart).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import uuid
from datetime import UTC, datetime

import pytest
import trio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway.ingest import ReportRow, parse_model
from gateway.storage import open_sqlite_store

NETWORKS = [uuid.UUID(int=i + 1) for i in range(2)]
DEVICES, VALUES = ["a", "b"], ["x", "y"]
NOW = datetime(2026, 11, 26, tzinfo=UTC)


class StoreHost:
    """A trio loop on a thread holding an open store; `call(fn)` runs `await fn(store)`.
    `opener()`: an async context manager opening the store (the same one each time)."""

    def __init__(self, opener) -> None:
        self.opener = opener
        self.started = threading.Event()
        self.thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self.thread.start()
        assert self.started.wait(30)

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self.stop = trio.Event()
        async with self.opener() as self.store:
            self.started.set()
            await self.stop.wait()

    def call(self, fn):
        async def run():
            return await fn(self.store)
        return trio.from_thread.run(run, trio_token=self.token)

    def close(self) -> None:
        trio.from_thread.run_sync(self.stop.set, trio_token=self.token)
        self.thread.join(30)
        assert not self.thread.is_alive()


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.host = StoreHost(self.opener())
        self.uuids: dict[tuple, uuid.UUID] = {}  # (network, device[, value]) -> first UUID
        self.reports: dict[uuid.UUID, int] = {}  # value UUID -> reports stored

    @rule(network=st.sampled_from(NETWORKS),
          declared=st.lists(st.tuples(st.sampled_from(DEVICES), st.sampled_from(VALUES)),
                            min_size=1, max_size=4, unique=True),
          unit=st.sampled_from(["C", "F"]))
    def declare(self, network, declared, unit):
        devices: dict[str, list] = {}
        for d, v in declared:
            devices.setdefault(d, []).append(
                {"name": v, "permission": "r", "number": {"min": 0, "max": 9, "unit": unit}})
        doc = {"devices": [{"name": d, "values": vs} for d, vs in devices.items()]}
        model = parse_model(json.dumps(doc).encode())
        tree = self.host.call(lambda s: s.declare_model(network, model, NOW))
        for dev in tree.devices:
            assert self.uuids.setdefault((network, dev.name), dev.uuid) == dev.uuid
            for v in dev.values:
                assert self.uuids.setdefault((network, dev.name, v.name), v.uuid) == v.uuid
                self.reports.setdefault(v.uuid, 0)

    def _values(self) -> list[tuple]:
        return sorted(k for k in self.uuids if len(k) == 3)

    @precondition(lambda self: self._values())
    @rule(data=st.data(), count=st.integers(1, 5))
    def report(self, data, count):
        value_uuid = self.uuids[data.draw(st.sampled_from(self._values()))]
        rows = [ReportRow(value_uuid, str(i), NOW, NOW) for i in range(count)]
        self.host.call(lambda s: s.append_reports(rows))
        self.reports[value_uuid] += count

    @rule(network=st.sampled_from(NETWORKS))
    def erase(self, network):
        known = any(k[0] == network for k in self.uuids)
        assert self.host.call(lambda s: s.erase_network(network)) == known
        for key in [k for k in self.uuids if k[0] == network]:
            self.reports.pop(self.uuids.pop(key), None)

    def opener(self):
        return lambda: open_sqlite_store(self.dir)

    @rule()
    def restart(self):
        self.host.close()
        self.host = StoreHost(self.host.opener)

    @invariant()
    def trees_and_reports_match(self):
        for network in NETWORKS:
            tree = self.host.call(lambda s, n=network: s.get_tree(n))
            expected = {k[1:]: u for k, u in self.uuids.items() if k[0] == network}
            if tree is None:
                assert not expected
                continue
            found = {}
            for dev in tree.devices:
                found[(dev.name,)] = dev.uuid
                for v in dev.values:
                    found[(dev.name, v.name)] = v.uuid
                    n = len(self.host.call(lambda s, u=v.uuid: s.history(u, limit=10_000)))
                    assert n == self.reports[v.uuid]
            assert found == expected

    def teardown(self):
        self.host.close()
        shutil.rmtree(self.dir, ignore_errors=True)


StoreMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=15,
                                          deadline=None)
test_store_state_machine = StoreMachine.TestCase


class PostgresStoreMachine(StoreMachine):
    """The same rules on the PostgreSQL store, a fresh database per example."""

    server = None  # the session's PostgreSQL server (`_postgres` below)

    def opener(self):
        from gateway.storage.postgres import open_postgres_store

        url = self.server.create_database(f"sm_{uuid.uuid4().hex}")
        return lambda: open_postgres_store(url)


@pytest.fixture(autouse=True)
def _postgres(request):
    """Hands the session's server to the PostgreSQL machine (a unittest-style case takes no
    fixture arguments)."""
    if "postgres" in request.node.nodeid:
        PostgresStoreMachine.server = request.getfixturevalue("postgres_server")


PostgresStoreMachine.TestCase.settings = settings(max_examples=10, stateful_step_count=15,
                                                  deadline=None)
test_postgres_store_state_machine = PostgresStoreMachine.TestCase
