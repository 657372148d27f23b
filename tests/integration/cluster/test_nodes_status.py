"""`fleet-gateway cluster status` and the `fleetgate_cluster_*` metrics, on a real PostgreSQL
whose node table holds an alive node and one whose heartbeat lapsed."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from gateway.cluster.nodes import ClusterView, Membership, ensure_schema, read_nodes
from gateway.http.metrics import cluster_samples, render


@pytest.fixture
def two_nodes(postgres_url):
    now = datetime.now(UTC)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        ensure_schema(conn)
        alive = Membership(conn, "gw-alive", clock=lambda: now, dead_after=5.0, version="9.9")
        alive.join()
        alive.mqtt = "10.0.0.1:8883"
        alive.beat(connections=1234, bus_lag=0.0042)
        gone = Membership(conn, "gw-gone", clock=lambda: now - timedelta(minutes=10),
                          dead_after=5.0)
        gone.join()
    return postgres_url


# The CLI reads the node table at its own now, after its start-up: a heartbeat written by a
# fixture must stay "alive" however slowly a loaded machine starts the process (the default
# node_dead_after of 5 s did not), and the lapsed one (600 s old) stays past it.
DEAD_AFTER = 120.0


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text(f"[cluster]\nnode_dead_after = {DEAD_AFTER}\n")
    return str(path)


def status(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "cluster", "status", *args],
                          capture_output=True, text=True, timeout=60)


def test_cluster_status_lists_each_node_and_exits_12_when_one_is_not_alive(two_nodes,
                                                                           config):
    done = status("--store", two_nodes, "--config", config)
    assert done.returncode == 12, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("2 node(s): 1 alive, 1 not; 1,234 live connection(s)")
    row = {line.split()[0]: line.split() for line in lines[2:]}
    assert row["gw-alive"][1] == "alive" and "10.0.0.1:8883" in row["gw-alive"]
    assert row["gw-alive"][3:5] == ["4.2", "ms"]  # its bus lag
    assert row["gw-gone"][1] == "lapsed"
    assert float(row["gw-gone"][2].removesuffix("s")) >= 600


def test_cluster_status_json_has_the_same_figures(two_nodes, config):
    done = status("--store", two_nodes, "--config", config, "--json")
    assert done.returncode == 12
    doc = json.loads(done.stdout)
    nodes = {n["name"]: n for n in doc["nodes"]}
    assert (doc["alive"], doc["not_alive"], doc["connections"]) == (1, 1, 1234)
    assert nodes["gw-alive"]["state"] == "alive" and nodes["gw-alive"]["version"] == "9.9"
    assert nodes["gw-gone"]["heartbeat_age"] >= 600
    assert nodes["gw-alive"]["lag"] == 0.004 and nodes["gw-gone"]["lag"] >= 600


def test_cluster_status_exits_0_when_every_node_is_alive(postgres_url, config):
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        ensure_schema(conn)
        Membership(conn, "only", clock=lambda: datetime.now(UTC), dead_after=60.0).join()
    done = status("--store", postgres_url, "--config", config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("1 node(s): 1 alive, 0 not")


def test_cluster_status_without_a_postgresql_store_is_one_line_and_exit_3(tmp_path):
    done = status()
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1 and "needs a PostgreSQL store" in done.stderr


def test_cluster_status_with_postgresql_unreachable_is_one_line(tmp_path):
    done = status("--store", f"postgresql://nobody@/db?host={tmp_path}&port=1")
    assert done.returncode == 9
    assert done.stderr.count("\n") == 1 and "cannot read the cluster" in done.stderr


def test_metrics_show_the_cluster_family(two_nodes):
    with psycopg.connect(two_nodes, autocommit=True) as conn:
        view = ClusterView(dead_after=DEAD_AFTER, nodes=read_nodes(conn), reaped=3)
    text = render(cluster_samples(view)).decode()
    assert 'fleetgate_cluster_nodes{state="alive"} 1.0' in text
    assert 'fleetgate_cluster_nodes{state="lapsed"} 1.0' in text
    assert 'fleetgate_cluster_node_connections{node="gw-alive"} 1234.0' in text
    assert 'fleetgate_cluster_node_up{node="gw-gone"} 0.0' in text
    assert "fleetgate_cluster_nodes_reaped_total 3.0" in text
    assert 'fleetgate_cluster_node_bus_lag_seconds{node="gw-alive"} 0.0042' in text
    age = next(line for line in text.splitlines()
               if line.startswith('fleetgate_cluster_node_heartbeat_age_seconds{node="gw-gone"}'))
    assert float(age.split()[-1]) >= 600
