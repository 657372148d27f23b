"""Stored bytes per network (`network_usage`, migration 3): kept in the inserting transaction,
removed by erasure, backfilled by the migration; and the quota ingest enforces with it."""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import timedelta

from storehelpers import MIGRATION_5_COLUMNS, T0, model_decl

from gateway.ingest import Ingest, Limits, ReportRow
from gateway.storage import DB_NAME, open_sqlite_store
from gateway.storage.sqlite.ops import ROW_OVERHEAD
from gateway.storage.sqlite.schema import MIGRATIONS

A, B = uuid.UUID(int=1), uuid.UUID(int=2)


def db(tmp_path) -> sqlite3.Connection:
    return sqlite3.connect(tmp_path / DB_NAME)


def usage_rows(tmp_path) -> dict[str, int]:
    conn = db(tmp_path)
    try:
        return {n: b for n, b in conn.execute(
            "SELECT n.uuid, u.stored_bytes FROM network_usage u "
            "JOIN networks n ON n.id = u.network_id")}
    finally:
        conn.close()


def summed(tmp_path) -> dict[str, int]:
    """What the usage rows must equal: a full SUM, which only tests and the backfill do."""
    conn = db(tmp_path)
    try:
        return {n: b for n, b in conn.execute(
            "SELECT n.uuid, sum(length(CAST(l.data AS BLOB)) + ?) FROM state_log l "
            "JOIN states s ON s.id = l.state_id JOIN networks n ON n.id = s.network_id "
            "GROUP BY n.uuid", (ROW_OVERHEAD,))}
    finally:
        conn.close()


async def test_usage_follows_inserts_resends_commands_and_erasure(tmp_path):
    async with open_sqlite_store(tmp_path) as store:
        values = {}
        for net in (A, B):
            tree = await store.declare_model(net, model_decl(), T0)
            values[net] = tree.devices[0].values
        temp_a, target_a = values[A][0].uuid, values[A][1].uuid
        await store.append_reports([ReportRow(temp_a, "21.5", T0, T0),  # no device time
                                    ReportRow(temp_a, "ünï", T0, T0)], A)  # 5 UTF-8 bytes
        stamped = ReportRow(temp_a, "22", T0 - timedelta(minutes=1), T0)
        await store.append_reports([stamped], A)
        await store.append_reports([stamped, ReportRow(temp_a, "23", stamped.timestamp, T0)],
                                   A)  # a resend (stored once) beside a new reading
        await store.append_control(target_a, "20", T0)
        await store.append_reports([ReportRow(values[B][0].uuid, "1", T0, T0)], B)
        expected_a = 4 + 5 + 2 + 2 + 2 + 5 * ROW_OVERHEAD
        assert usage_rows(tmp_path) == summed(tmp_path) == {
            str(A): expected_a, str(B): 1 + ROW_OVERHEAD}
        assert await store.stored_bytes(A) == expected_a  # known to the writer: no read
        assert store._side.stored_bytes(A) == expected_a
        assert await store.erase_network(A)
        assert usage_rows(tmp_path) == {str(B): 1 + ROW_OVERHEAD}
        assert await store.stored_bytes(A) == 0
    async with open_sqlite_store(tmp_path) as store:  # after a restart: read from the row
        assert store._side.stored_bytes(B) is None
        assert await store.stored_bytes(B) == 1 + ROW_OVERHEAD
        assert await store.stored_bytes(uuid.uuid4()) == 0


async def test_migration_3_backfills_the_usage_of_a_version_2_database(tmp_path):
    async with open_sqlite_store(tmp_path) as store:
        for net in (A, B):
            tree = await store.declare_model(net, model_decl(), T0)
            await store.append_reports([ReportRow(tree.devices[0].values[0].uuid, str(i) * i,
                                                  T0, T0) for i in range(1, 30)], net)
    expected = summed(tmp_path)
    conn = db(tmp_path)
    conn.isolation_level = None
    conn.execute("DROP TABLE network_usage")
    conn.execute("DROP TABLE audit")  # migration 4's, applied again after 3
    for table, column in MIGRATION_5_COLUMNS:  # migration 5's, applied again after 4
        conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    async with open_sqlite_store(tmp_path) as store:
        assert store.schema_version == MIGRATIONS[-1][0]
        assert usage_rows(tmp_path) == expected
        assert await store.stored_bytes(A) == expected[str(A)]


async def test_a_network_past_its_quota_gets_its_reports_refused_with_a_reason(tmp_path):
    model = {"devices": [{"name": "thermo", "values": [
        {"name": "temp", "permission": "r", "number": {"min": -40, "max": 125}}]}]}
    quota = 10 * (2 + ROW_OVERHEAD)
    async with open_sqlite_store(tmp_path) as store:
        ingest = Ingest(store, limits=Limits(max_stored_bytes_per_network=quota))
        for net in (A, B):
            await ingest.handle(net, "c", "model", json.dumps(model).encode(), 1, T0)
        batch = json.dumps({"reports": [{"data": 10 + i} for i in range(10)]}).encode()
        assert await ingest.handle(A, "c", "report/thermo/temp", batch, 1, T0) == []
        assert await store.stored_bytes(A) == quota  # reached
        (reply,) = await ingest.handle(A, "c", "report/thermo/temp", b"42", 1, T0)
        doc = json.loads(reply.payload)
        assert reply.topic == "errors" and doc["topic"] == "report/thermo/temp"
        assert doc["errors"][0]["code"] == "QUOTA"
        assert str(quota) in doc["errors"][0]["reason"]
        pending = await ingest.submit(A, "c", "report/thermo/temp", b"43", 0, T0)  # QoS 0
        assert pending.readings == 0 and json.loads(pending.replies[0].payload)[
            "errors"][0]["code"] == "QUOTA"
        assert ingest.statistics().rejected == {"QUOTA": 2}
        # nothing stored is harmed, and another network is not concerned
        assert await store.stored_bytes(A) == quota
        assert await ingest.handle(B, "c", "report/thermo/temp", b"42", 1, T0) == []
        tree = await store.get_tree(A)
        history = await store.history(tree.devices[0].values[0].uuid, limit=100)
        assert [r.data for r in history] == [str(10 + i) for i in range(10)]
        # erasing frees the quota
        await ingest.erase_network(A)
        await ingest.handle(A, "c", "model", json.dumps(model).encode(), 1, T0)
        assert await ingest.handle(A, "c", "report/thermo/temp", b"42", 1, T0) == []


async def test_quota_zero_means_no_limit(tmp_path):
    async with open_sqlite_store(tmp_path) as store:
        ingest = Ingest(store, limits=Limits(max_stored_bytes_per_network=0))
        model = {"devices": [{"name": "d", "values": [
            {"name": "v", "permission": "r", "string": {"max": 100}}]}]}
        await ingest.handle(A, "c", "model", json.dumps(model).encode(), 1, T0)
        for _ in range(3):
            assert await ingest.handle(A, "c", "report/d/v", b"x" * 100, 1, T0) == []
        assert ingest.statistics().rejected == {}
