"""The per-connection and per-source log budgets and the size-capped log file."""

from __future__ import annotations

import io
import json
import os
from datetime import UTC, datetime, timedelta

import pytest

from gateway.app import open_log
from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.logs import ConnectionLog, EventLog, RotatingLogFile, SourceLog
from gateway.metrics import MqttMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_lines_past_the_budget_are_counted_and_summed_up_once_it_refills():
    out, clock, metrics = io.StringIO(), Clock(), MqttMetrics()
    log = ConnectionLog(EventLog(out, level="debug"), rate=1.0, burst=5, metrics=metrics,
                        clock=clock)
    for i in range(1000):
        log.emit("publish_denied", network="n", client_id="c", topic=f"$SYS/{i}")
    for _ in range(3):
        log.emit("subscribe_denied", topic="$x")
    written = lines(out)
    assert [r["event"] for r in written] == ["publish_denied"] * 5
    assert metrics.log_lines_suppressed.value == 998
    clock.now = 1.0  # one line's worth of budget: the summary comes first, then the line
    log.emit("subscribed", filters=["a"])
    summary, line = lines(out)[5:]
    assert summary["event"] == "log_suppressed" and summary["suppressed"] == 998
    assert summary["events"] == {"publish_denied": 995, "subscribe_denied": 3}
    assert summary["network"] == "n" and summary["client_id"] == "c"
    assert line["event"] == "subscribed"
    log.finish()  # nothing suppressed since: no second summary
    assert len(lines(out)) == 7 and metrics.log_summaries.value == 1


def test_essential_lines_bypass_the_budget_and_follow_the_summary():
    out, clock, metrics = io.StringIO(), Clock(), MqttMetrics()
    log = ConnectionLog(EventLog(out), rate=1.0, burst=1, metrics=metrics, clock=clock)
    log.emit("connected", client_id="c")
    log.emit("publish_denied")
    log.emit("publish_denied")
    log.emit("disconnected", client_id="c")
    log.finish()
    assert [r["event"] for r in lines(out)] == [
        "connected", "publish_denied", "log_suppressed", "disconnected"]
    assert lines(out)[2]["suppressed"] == 1


def test_refusals_of_one_source_stay_within_its_budget_and_others_keep_theirs():
    out, clock, metrics = io.StringIO(), Clock(), MqttMetrics()
    log = SourceLog(EventLog(out), rate=1.0, burst=3, metrics=metrics, clock=clock)
    for _ in range(1000):  # a flood of refused connections from one source
        log.emit("10.0.0.0", "refused", reason="THROTTLED", peer="10.0.0.0/24")
    assert log.emit("10.0.1.0", "refused", reason="AUTH_ERROR", peer="10.0.1.0/24")
    assert [(r["event"], r["peer"]) for r in lines(out)] == [
        ("refused", "10.0.0.0/24")] * 3 + [("refused", "10.0.1.0/24")]
    assert metrics.log_lines_suppressed.value == 997
    clock.now = 1.0  # one line's worth later: the summary, then the line
    log.emit("10.0.0.0", "refused", reason="THROTTLED", peer="10.0.0.0/24")
    summary, line = lines(out)[-2:]
    assert (summary["event"], summary["suppressed"], summary["events"]) == (
        "log_suppressed", 997, {"refused": 997})
    assert line["event"] == "refused" and metrics.log_summaries.value == 1


def test_the_log_file_is_rotated_at_its_cap_and_old_files_kept(tmp_path):
    path = tmp_path / "gateway.log"
    config = load_config(None, {"log_file": str(path), "log_max_bytes": 4096,
                                "log_backups": 2})
    log = open_log(config)
    for i in range(200):  # ~100 bytes a line: ~20 KB through a 4 KiB cap
        log.emit("publish_denied", topic=f"t/{i:04d}", detail="x" * 40)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["gateway.log", "gateway.log.1", "gateway.log.2"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= 4096
        assert p.stat().st_mode & 0o777 == 0o640
    last = json.loads(path.read_text().splitlines()[-1])
    assert last["topic"] == "t/0199"
    path.rename(tmp_path / "moved.log")  # an external rotation tool, then SIGHUP
    log.reopen()
    assert json.loads(path.read_text().splitlines()[0])["event"] == "log_reopened"


def test_the_log_file_is_capped_and_aged_by_default():
    config = load_config(None, {})
    assert (config.log_max_bytes, config.log_backups) == (100 * 1024 * 1024, 30)
    assert (config.log_retention_days, config.log_level) == (30, "info")


class Day:
    """A UTC wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_the_log_file_turns_over_at_utc_midnight_and_old_files_are_deleted(tmp_path):
    day = Day()
    path = tmp_path / "gateway.log"
    rotating = RotatingLogFile(str(path), max_bytes=1 << 20, backups=30, retention_days=3,
                               clock=day)
    log = EventLog(rotating=rotating)
    for n in range(6):  # one line a day; each rotated file dated like its last line
        log.emit("connected", client_id=f"day{n}", peer="192.0.2.0/24")
        stamp = day.now.timestamp()
        os.utime(path, (stamp, stamp))
        day.now += timedelta(days=1)
    log.maintain()  # a quiet day: the hourly check rotates and prunes by itself
    kept = sorted(p.name for p in tmp_path.iterdir())
    # Days 0..5 were written; the retention keeps the files whose last line is < 3 days old.
    assert kept == ["gateway.log", "gateway.log.1", "gateway.log.2", "gateway.log.3"]
    remaining = [json.loads(line)["client_id"] for name in kept
                 for line in (tmp_path / name).read_text().splitlines()]
    assert sorted(remaining) == ["day3", "day4", "day5"]
    log.maintain()  # the same day again: nothing to rotate, nothing more to delete
    assert sorted(p.name for p in tmp_path.iterdir()) == kept


def test_lines_below_the_log_level_are_not_written_but_listeners_see_them():
    out, seen = io.StringIO(), []
    log = EventLog(out, level="warning")
    log.add_listener(seen.append)
    log.emit("subscribed", client_id="c")  # debug
    log.emit("connected", client_id="c")  # info
    log.emit("refused", cause="UNKNOWN_CA")  # warning
    log.emit("internal_error", detail="bug")  # error
    assert [(r["level"], r["event"]) for r in lines(out)] == [
        ("warning", "refused"), ("error", "internal_error")]
    assert [r["event"] for r in seen] == ["subscribed", "connected", "refused", "internal_error"]


def test_a_log_level_that_does_not_exist_is_a_config_error():
    with pytest.raises(ConfigError, match="log_level"):
        load_config(None, {"log_level": "verbose"})
