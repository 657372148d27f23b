"""The gateway's own log rotation by day and deletion past `log_retention_days`, on real
files in tmp_path, with the wall clock injected."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import pytest
import trio

from gateway.app import open_log
from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.logs import DAY, EventLog, RotatingLogFile
from gateway.maintenance import maintain_log

NOON = 20_000 * DAY + DAY / 2  # 2024-10-04 12:00 UTC


class WallClock:
    """The UTC wall clock, moved by hand in epoch seconds."""

    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


def log_at(tmp_path, clock, *, days=30, backups=40, max_bytes=0) -> EventLog:
    rotating = RotatingLogFile(str(tmp_path / "gw.log"), max_bytes=max_bytes, backups=backups,
                               retention_days=days, clock=clock)
    return EventLog(rotating=rotating, truncate_ips=True, level="debug")


def files(tmp_path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir())


def peers(path) -> list[str]:
    return [json.loads(line).get("peer") for line in path.open()]


def test_the_first_line_of_a_new_utc_day_starts_a_new_file(tmp_path):
    clock = WallClock()
    log = log_at(tmp_path, clock)
    log.emit("connected", peer=log.peer("192.0.2.7"))
    clock.now += DAY / 2 - 1  # 23:59:59, same day
    log.emit("connected", peer=log.peer("192.0.2.8"))
    assert files(tmp_path) == ["gw.log"]
    clock.now += 2  # 00:00:01 the next day
    log.emit("connected", peer=log.peer("198.51.100.9"))
    assert files(tmp_path) == ["gw.log", "gw.log.1"]
    assert peers(tmp_path / "gw.log.1") == ["192.0.2.0/24", "192.0.2.0/24"]
    assert peers(tmp_path / "gw.log") == ["198.51.100.0/24"]
    # The rotated file's time is its newest line's, on the injected clock.
    assert os.stat(tmp_path / "gw.log.1").st_mtime == pytest.approx(NOON + DAY / 2 - 1)


def test_files_older_than_the_retention_are_deleted_and_newer_ones_kept(tmp_path):
    clock = WallClock()
    log = log_at(tmp_path, clock, days=30)
    for day in range(40):  # one line a day for 40 days
        log.emit("connected", peer=log.peer("192.0.2.7"), day=day)
        clock.now += DAY
    log.emit("connected", day=40)
    kept = [name for name in files(tmp_path) if name != "gw.log"]
    # Files whose newest line is at most 30 days old: the lines of days 10..39.
    assert len(kept) == 30
    oldest = max(kept, key=lambda name: int(name.rsplit(".", 1)[1]))
    assert [json.loads(line)["day"] for line in (tmp_path / oldest).open()] == [10]
    for name in kept:
        age = clock.now - os.stat(tmp_path / name).st_mtime
        assert age <= 30 * DAY


def test_maintenance_rotates_and_deletes_when_no_line_comes(tmp_path):
    clock = WallClock()
    log = log_at(tmp_path, clock, days=2)
    log.emit("connected", peer=log.peer("192.0.2.7"))
    clock.now += DAY  # a quiet gateway: no line the next day
    log.maintain()
    assert files(tmp_path) == ["gw.log", "gw.log.1"]
    assert (tmp_path / "gw.log").stat().st_size == 0
    log.maintain()  # an empty file is not rotated again
    clock.now += DAY
    log.maintain()
    assert files(tmp_path) == ["gw.log", "gw.log.1"]
    clock.now += 2 * DAY  # the line is now past the 2 days: its address leaves the disk
    log.maintain()
    assert files(tmp_path) == ["gw.log"]


def test_a_file_left_by_an_earlier_run_is_aged_by_its_last_write(tmp_path):
    path = tmp_path / "gw.log"
    path.write_text(json.dumps({"event": "stopped", "peer": "192.0.2.0/24"}) + "\n")
    os.utime(path, (NOON - 45 * DAY, NOON - 45 * DAY))  # the gateway was off 45 days
    stale = tmp_path / "gw.log.7"  # and one from a config with more backups
    stale.write_text("{}\n")
    os.utime(stale, (NOON - 60 * DAY, NOON - 60 * DAY))
    clock = WallClock()
    log = log_at(tmp_path, clock, days=30)
    log.emit("listening")  # the first line rotates the old file; the old files are deleted
    assert files(tmp_path) == ["gw.log"]
    assert [json.loads(line)["event"] for line in path.open()] == ["listening"]


def test_size_rotation_still_applies_within_a_day(tmp_path):
    clock = WallClock()
    log = log_at(tmp_path, clock, max_bytes=2048, backups=3)
    for i in range(100):
        log.emit("publish_denied", topic=f"t/{i:04d}", detail="x" * 40)
    assert files(tmp_path) == ["gw.log", "gw.log.1", "gw.log.2", "gw.log.3"]
    assert all(p.stat().st_size <= 2048 for p in tmp_path.iterdir())


def test_with_no_backups_a_rotation_drops_the_lines(tmp_path):
    clock = WallClock()
    log = log_at(tmp_path, clock, backups=0)
    log.emit("connected", peer=log.peer("192.0.2.7"))
    clock.now += DAY
    log.emit("connected", peer=log.peer("198.51.100.9"))
    assert files(tmp_path) == ["gw.log"]
    assert peers(tmp_path / "gw.log") == ["198.51.100.0/24"]


def test_other_files_in_the_folder_are_left_alone(tmp_path):
    for name in ("gw.log.bak", "gw.logx.1", "other.1"):
        (tmp_path / name).write_text("keep")
        os.utime(tmp_path / name, (0, 0))
    log_at(tmp_path, WallClock()).maintain()
    assert files(tmp_path) == ["gw.log", "gw.log.bak", "gw.logx.1", "other.1"]


def test_retention_is_on_by_default_and_zero_turns_the_daily_rotation_off(tmp_path):
    assert load_config(None, {}).log_retention_days == 30
    path = tmp_path / "gw.log"
    log = open_log(load_config(None, {"log_file": str(path)}))
    assert log._rotating is not None and log._rotating.retention == 30 * DAY
    off = open_log(load_config(None, {"log_file": str(path), "log_retention_days": 0,
                                      "log_max_bytes": 0}))
    assert off._rotating is None  # an external tool rotates (rename, then SIGHUP)
    with pytest.raises(ConfigError, match="must not be negative"):
        load_config(None, {"log_retention_days": -1})


async def test_maintenance_runs_at_start_just_after_utc_midnight_and_at_least_hourly(
        autojump_clock):
    class Log:
        def __init__(self) -> None:
            self.at: list[float] = []

        def maintain(self) -> None:
            self.at.append(trio.current_time())

    log = Log()
    start = 21_000 * DAY - 10.0  # ten seconds before a UTC midnight

    def wall() -> float:
        return start + trio.current_time()

    with trio.move_on_after(3 * 3600):
        await maintain_log(log, clock=wall)  # type: ignore[arg-type]
    assert log.at[:2] == [0.0, pytest.approx(11.0)]  # at start, then 1 s past midnight
    assert len(log.at) == 4
    assert all(b - a <= 3600.0 for a, b in zip(log.at, log.at[1:], strict=False))
