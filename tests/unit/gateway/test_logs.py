"""The per-connection log budget and the size-capped log file."""

from __future__ import annotations

import io
import json
from collections import Counter

from gateway.app import open_log
from gateway.config import load_config
from gateway.logs import ConnectionLog, EventLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_lines_past_the_budget_are_counted_and_summed_up_once_it_refills():
    out, clock, counters = io.StringIO(), Clock(), Counter()
    log = ConnectionLog(EventLog(out), rate=1.0, burst=5, counters=counters, clock=clock)
    for i in range(1000):
        log.emit("publish_denied", network="n", client_id="c", topic=f"$SYS/{i}")
    for _ in range(3):
        log.emit("subscribe_denied", topic="$x")
    written = lines(out)
    assert [r["event"] for r in written] == ["publish_denied"] * 5
    assert counters["log_lines_suppressed"] == 998
    clock.now = 1.0  # one line's worth of budget: the summary comes first, then the line
    log.emit("subscribed", filters=["a"])
    summary, line = lines(out)[5:]
    assert summary["event"] == "log_suppressed" and summary["suppressed"] == 998
    assert summary["events"] == {"publish_denied": 995, "subscribe_denied": 3}
    assert summary["network"] == "n" and summary["client_id"] == "c"
    assert line["event"] == "subscribed"
    log.finish()  # nothing suppressed since: no second summary
    assert len(lines(out)) == 7 and counters["log_summaries"] == 1


def test_essential_lines_bypass_the_budget_and_follow_the_summary():
    out, clock, counters = io.StringIO(), Clock(), Counter()
    log = ConnectionLog(EventLog(out), rate=1.0, burst=1, counters=counters, clock=clock)
    log.emit("connected", client_id="c")
    log.emit("publish_denied")
    log.emit("publish_denied")
    log.emit("disconnected", client_id="c")
    log.finish()
    assert [r["event"] for r in lines(out)] == [
        "connected", "publish_denied", "log_suppressed", "disconnected"]
    assert lines(out)[2]["suppressed"] == 1


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


def test_the_log_file_is_capped_by_default():
    config = load_config(None, {})
    assert config.log_max_bytes == 100 * 1024 * 1024 and config.log_backups == 5
