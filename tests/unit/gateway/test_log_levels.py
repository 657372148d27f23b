"""Log levels: what each level writes, what the per-connection budget and the config see."""

from __future__ import annotations

import io
import json

import pytest

from gateway.app import open_log
from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.logs import EVENT_LEVELS, LOG_LEVELS, ConnectionLog, EventLog
from gateway.metrics import MqttMetrics


def events(stream: io.StringIO) -> list[str]:
    return [json.loads(line)["event"] for line in stream.getvalue().splitlines()]


def emit_one_of_each(log: EventLog) -> None:
    for event in ("subscribed", "connected", "refused", "internal_error"):
        log.emit(event, network="n")


@pytest.mark.parametrize(("level", "written"), [
    ("debug", ["subscribed", "connected", "refused", "internal_error"]),
    ("info", ["connected", "refused", "internal_error"]),
    ("warning", ["refused", "internal_error"]),
    ("error", ["internal_error"]),
])
def test_a_log_writes_the_events_at_or_above_its_level(level, written):
    out = io.StringIO()
    emit_one_of_each(EventLog(out, level=level))
    assert events(out) == written


def test_each_line_names_its_level():
    out = io.StringIO()
    emit_one_of_each(EventLog(out, level="debug"))
    assert [json.loads(line)["level"] for line in out.getvalue().splitlines()] == [
        "debug", "info", "warning", "error"]
    assert set(EVENT_LEVELS.values()) <= set(LOG_LEVELS)


def test_a_quiet_line_spends_none_of_a_connections_log_budget():
    out, metrics = io.StringIO(), MqttMetrics()
    log = ConnectionLog(EventLog(out, level="info"), rate=1.0, burst=2, metrics=metrics,
                        clock=lambda: 0.0)
    for i in range(500):  # the 159 `subscribed` lines of a short session, and more
        log.emit("subscribed", filters=[f"t/{i}"])
    log.emit("publish_denied", topic="$SYS/x")
    log.emit("publish_denied", topic="$SYS/y")
    log.finish()
    assert events(out) == ["publish_denied", "publish_denied"]
    assert metrics.log_lines_suppressed.value == 0


def test_the_gateway_log_is_info_by_default_and_takes_log_level(tmp_path):
    path = tmp_path / "gw.log"
    for level, expected in (("info", ["connected"]), ("debug", ["subscribed", "connected"])):
        path.unlink(missing_ok=True)
        overrides = {"log_file": str(path)} | ({"log_level": level} if level != "info" else {})
        log = open_log(load_config(None, overrides))
        log.emit("subscribed")
        log.emit("connected")
        assert [json.loads(line)["event"] for line in path.open()] == expected


def test_log_level_is_read_from_the_log_table(tmp_path):
    config = tmp_path / "gw.toml"
    config.write_text('[log]\nlog_level = "warning"\n')
    assert load_config(config).log_level == "warning"


@pytest.mark.parametrize("bad", ["loud", "INFO ", "", "trace"])
def test_a_wrong_log_level_is_a_config_error_naming_the_choices(bad):
    with pytest.raises(ConfigError, match="'log_level' must be one of debug, info, warning, "
                                          "error"):
        load_config(None, {"log_level": bad})


def test_a_non_string_log_level_is_a_config_error(tmp_path):
    config = tmp_path / "gw.toml"
    config.write_text("[log]\nlog_level = 10\n")
    with pytest.raises(ConfigError, match="'log_level' must be a string"):
        load_config(config)
