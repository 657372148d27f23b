"""A failing store: a 500 error document before an answer starts, a cut connection (never a
complete-looking document) when it fails in the middle of a streamed answer; the server
keeps serving either way. Only the store's failure is simulated (a wrapper around the real
SQLite store); TLS, sockets and HTTP are real."""

from __future__ import annotations

import http.client
import uuid

import pytest
import trio
from httphelpers import seed_network, start_env, value_uuid

from gateway.storage import StorageError, open_sqlite_store


class FlakyStore:
    """The real store, with chosen reads failing as a broken disk would make them."""

    def __init__(self, store) -> None:
        self._store = store
        self.fail_find_value = False
        self.fail_history_after = None  # fail history() calls after this many

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def find_value(self, value):
        if self.fail_find_value:
            raise StorageError("read failed: disk I/O error")
        return await self._store.find_value(value)

    async def history(self, *args, **kw):
        if self.fail_history_after is not None:
            if self.fail_history_after == 0:
                raise StorageError("read failed: disk I/O error")
            self.fail_history_after -= 1
        return await self._store.history(*args, **kw)


@pytest.fixture
async def flaky(ca_home, tmp_path):
    async with open_sqlite_store(tmp_path / "d") as real, trio.open_nursery() as nursery:
        store = FlakyStore(real)
        env = await start_env(ca_home, tmp_path / "d", nursery, store)
        yield env, store
        nursery.cancel_scope.cancel()


async def test_a_store_failure_before_the_answer_is_a_500_document(flaky):
    env, store = flaky
    store.fail_find_value = True
    client = env.operator()
    answer = await client.get(f"/api/v1/values/{uuid.uuid4()}")
    assert answer.status == 500 and answer.error_code == "internal_error"
    store.fail_find_value = False
    assert (await client.get("/healthz")).status == 200
    assert env.stats.metrics.internal_errors.value == 1


async def test_a_store_failure_mid_stream_cuts_the_answer_instead_of_ending_it(flaky):
    env, store = flaky
    tree = await seed_network(env.ingest, uuid.uuid4(), reports=1500)
    value = value_uuid(tree, "temp")
    store.fail_history_after = 1  # the first page (1000 rows) is sent, the second fails
    client = env.operator()
    with pytest.raises((http.client.IncompleteRead, http.client.RemoteDisconnected,
                        ConnectionError)):
        await client.get(f"/api/v1/values/{value}/reports?limit=1500")
    store.fail_history_after = None
    answer = await env.operator().get(f"/api/v1/values/{value}/reports?limit=1500")
    assert answer.status == 200 and len(answer.json["reports"]) == 1500
