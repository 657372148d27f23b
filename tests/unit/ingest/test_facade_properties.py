"""Hypothesis through `Ingest.handle` over a real store: any publish gets replies, never a crash."""

from __future__ import annotations

import json
import tempfile
import uuid
from datetime import UTC, datetime

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ingest import Ingest
from gateway.storage import open_sqlite_store

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
NETWORK = uuid.UUID("2f0e8c44-7a2b-4c1d-9e3f-5a6b7c8d9e0f")
MODEL = {"devices": [{"name": "d", "values": [
    {"name": "n", "permission": "rw", "number": {"min": -5, "max": 5, "step": 0.5}},
    {"name": "s", "permission": "r", "string": {"max": 5}},
    {"name": "x", "permission": "r", "xml": {"max": 100}},
    {"name": "w", "permission": "w", "blob": {"max": 5}},
]}]}

segments = st.sampled_from(["d", "n", "s", "x", "w", "", "+", "#", "zz"]) | st.text(max_size=6)
topics = st.one_of(
    st.builds(lambda a, b: f"report/{a}/{b}", segments, segments),
    st.builds(lambda a: f"report/{a}", segments | st.uuids().map(str)),
    st.just("model"),
    st.text(max_size=20),
)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
payloads = st.one_of(
    st.binary(max_size=100),
    st.text(max_size=30).map(str.encode),
    st.fixed_dictionaries({}, optional={"data": scalars, "timestamp": st.text(max_size=30)})
    .map(lambda d: json.dumps(d).encode()),
    st.lists(st.fixed_dictionaries({}, optional={"data": scalars}), max_size=4)
    .map(lambda r: json.dumps({"reports": r}).encode()),
)
messages = st.lists(st.tuples(topics, payloads, st.integers(0, 2)), min_size=1, max_size=5)
ALLOWED = {"errors", "model/accepted", "model/rejected"}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, min_size=1, max_size=4))
def test_any_publishes_get_replies_and_never_an_exception(batches):
    async def main(data_dir: str) -> None:
        async with open_sqlite_store(data_dir) as store:
            ingest = Ingest(store)
            await ingest.handle(NETWORK, "c", "model", json.dumps(MODEL).encode(), 1, NOW)
            for batch in batches:
                if len(batch) == 1:
                    replies = await ingest.handle(NETWORK, "c", *batch[0], NOW)
                else:
                    replies = await (await ingest.submit_many(NETWORK, "c", batch, NOW)).wait()
                for reply in replies:
                    assert reply.topic in ALLOWED or reply.topic.startswith("model/accepted/")
                    json.loads(reply.payload)
        # closed: QoS 0 reports, never waited for, are committed too by now
        stats = store.statistics()
        assert stats.failed_operations == 0  # nothing validated was refused by SQLite
        assert stats.reports == ingest.statistics().reports_stored

    with tempfile.TemporaryDirectory() as data_dir:
        trio.run(main, data_dir)
