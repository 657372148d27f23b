"""The partition drop docs/operations.md gives operators, run verbatim on a real PostgreSQL:
it drops the weeks wholly before its cutoff and keeps each network's stored bytes right."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from test_postgres_store import declared, summed, tables, usage_rows

from gateway.ingest import ReportRow
from gateway.storage.postgres import open_postgres_store
from gateway.storage.postgres.schema import (
    EPOCH,
    PARTITION_LOCK,
    partition_name,
    week_bounds,
    week_of,
)

DOC = Path(__file__).parents[3] / "docs" / "operations.md"


def documented_drop() -> str:
    """The ```sql block of the operations guide that drops old week partitions."""
    blocks = re.findall(r"```sql\n(DO \$\$.*?END \$\$;)\n```", DOC.read_text(), re.S)
    assert len(blocks) == 1
    return blocks[0]


def week(ts: datetime) -> int:
    return week_of((ts - EPOCH) // timedelta(microseconds=1))


def test_the_documented_block_takes_the_gateways_partition_lock():
    assert f"pg_advisory_xact_lock({PARTITION_LOCK})" in documented_drop()


async def test_the_documented_partition_drop_removes_old_weeks_and_their_stored_bytes(
        postgres_url, network):
    now = datetime.now(UTC)
    async with open_postgres_store(postgres_url) as store:
        value = await declared(store, network)
        old = [ReportRow(value, f"old{i}", now - timedelta(weeks=5, minutes=i), now)
               for i in range(10)]
        edge = ReportRow(value, "edge", now - timedelta(weeks=2), now)  # the cutoff's week
        new = [ReportRow(value, f"new{i}", now - timedelta(minutes=i), now) for i in range(5)]
        await store.append_reports([*old, edge, *new])
        start_us = week_bounds(week(edge.timestamp))[0]
        cutoff = (EPOCH + timedelta(microseconds=start_us)).date()  # that week's Monday
        old_week, edge_week = partition_name(week(old[0].timestamp)), partition_name(
            week(edge.timestamp))
        assert {old_week, edge_week} <= set(tables(postgres_url))
        block = re.sub(r"DATE '\d{4}-\d{2}-\d{2}'", f"DATE '{cutoff:%Y-%m-%d}'",
                       documented_drop())
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(block)
        assert old_week not in tables(postgres_url)
        assert edge_week in tables(postgres_url)
        assert sorted(r.data for r in await store.history(value, limit=100)) == sorted(
            r.data for r in [edge, *new])
        assert summed(postgres_url)[network] == usage_rows(postgres_url)[network]
