"""The cluster's log lines carry the level an operator reads them at: a node found dead or
fenced, a failed reap or heartbeat, a lost bus link, a worker that exited stand out from the
info lines of joins, leaves and reaps done."""

from __future__ import annotations

import ast
import io
import json
from pathlib import Path

import pytest

import gateway.cluster
from gateway.logs import EventLog

CLUSTER_EVENTS = {
    # membership (nodes.py)
    "node_joined": "info", "node_left": "info", "node_reaped": "info",
    "heartbeat_resumed": "info",
    "node_dead": "warning", "node_reaping": "warning", "heartbeat_failed": "warning",
    "node_fenced": "error", "reap_failed": "error",
    # the bus (bus.py) and the node's service (service.py)
    "cluster_joined": "info", "cluster_bus_resumed": "info", "cluster_erased": "info",
    "cluster_reaped": "info", "cluster_will_published": "info",
    "cluster_session_handed_over": "info", "cluster_retained_reloaded": "info",
    "cluster_bus_down": "warning", "cluster_bus_lost": "warning",
    "cluster_send_failed": "warning", "cluster_write_failed": "warning",
    "cluster_bad_note": "warning",
    "cluster_task_failed": "error", "cluster_handler_failed": "error",
    "cluster_retained_reload_failed": "error", "status_failed": "error",
    # the workers' supervisor (workers.py)
    "supervising": "info", "worker_started": "info", "worker_stopped": "info",
    "stopping": "info", "stopped": "info",
    "worker_exited": "warning",
}


def emitted_in_cluster_package() -> set[str]:
    """Every event name passed as a literal to `<log>.emit(...)` in gateway/cluster/."""
    names = set()
    for path in Path(gateway.cluster.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "emit" and node.args
                    and isinstance(node.args[0], ast.Constant)):
                names.add(node.args[0].value)
    return names


def test_every_event_the_cluster_emits_has_a_chosen_level_here():
    assert emitted_in_cluster_package() == set(CLUSTER_EVENTS)


@pytest.mark.parametrize(("event", "level"), sorted(CLUSTER_EVENTS.items()))
def test_a_cluster_event_is_written_at_its_level(event, level):
    out = io.StringIO()
    log = EventLog(out, level="warning")  # what an operator watching for trouble reads
    seen: list[dict] = []
    log.add_listener(seen.append)
    log.emit(event, node="a")
    assert [r["level"] for r in seen] == [level]
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    if level == "info":
        assert lines == []
    else:
        assert [(line["event"], line["level"]) for line in lines] == [(event, level)]
