"""History retention (`history_retention_days`): the hourly task on a real SQLite store, with
trio's clock and the wall clock injected; a failing store is logged, not fatal."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import trio

from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.ingest import ReportRow, parse_model
from gateway.logs import EventLog
from gateway.maintenance import MAINTENANCE_INTERVAL, expire_history, maintain_history
from gateway.metrics import StorageMetrics
from gateway.storage import open_sqlite_store
from gateway.storage.errors import StorageError

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
MODEL = parse_model(json.dumps({"devices": [{"name": "thermo", "values": [
    {"name": "temp", "permission": "r", "number": {"min": -40, "max": 125}}]}]}).encode())


def events(log: EventLog) -> list[dict]:
    seen: list[dict] = []
    log.add_listener(seen.append)
    return seen


async def test_each_hour_the_history_past_its_days_goes_and_is_counted(tmp_path,
                                                                        autojump_clock):
    net = uuid.uuid4()
    log = EventLog(io.StringIO())
    seen = events(log)
    metrics = StorageMetrics()
    async with open_sqlite_store(tmp_path) as store:
        value = (await store.declare_model(net, MODEL, START)).devices[0].values[0].uuid
        # 3 days old at start; 3 days old minus 30 minutes (so past 3 days after one hour).
        await store.append_reports([
            ReportRow(value, "1", START - timedelta(days=3, minutes=1), START),
            ReportRow(value, "2", START - timedelta(days=3) + timedelta(minutes=30), START),
            ReportRow(value, "3", START, START)], net)

        # The wall clock at each run: at start, then an hour later (trio's clock may also
        # jump while the store's threads work, through the store's own timers).
        wall = iter([START, START + timedelta(hours=1)]).__next__

        runs: list[float] = []

        class SecondRunStops:  # the real store; the task is stopped after its second run
            async def drop_reports_before(self, cutoff: datetime) -> int:
                removed = await store.drop_reports_before(cutoff)
                runs.append(trio.current_time())
                if len(runs) == 2:
                    scope.cancel()
                return removed

        with trio.CancelScope() as scope:
            await maintain_history(SecondRunStops(), 3, log=log,
                                   expired=metrics.history_expired, clock=wall)
        assert runs[1] - runs[0] >= MAINTENANCE_INTERVAL  # then the next hour
        assert [r.data for r in await store.history(value)] == ["3"]
    expired = [e for e in seen if e["event"] == "history_expired"]
    assert [e["removed"] for e in expired] == [1, 1]  # at start, then an hour later
    assert metrics.history_expired.value == 2


async def test_a_store_that_fails_is_logged_and_the_task_goes_on():
    class Down:
        async def drop_reports_before(self, cutoff: datetime) -> int:
            raise StorageError("PostgreSQL: connection refused")

    log = EventLog(io.StringIO())
    seen = events(log)
    metrics = StorageMetrics()
    assert await expire_history(Down(), 30, START, log=log,
                                expired=metrics.history_expired) == 0
    assert [(e["event"], e["level"], e["detail"]) for e in seen] == [
        ("history_retention_failed", "warning", "PostgreSQL: connection refused")]


def test_the_option_keeps_everything_by_default_and_refuses_negative_days():
    assert load_config(None, {}).history_retention_days == 0
    assert load_config(None, {"history_retention_days": 90}).history_retention_days == 90
    with pytest.raises(ConfigError, match="'history_retention_days' must not be negative"):
        load_config(None, {"history_retention_days": -1})
