#!/usr/bin/env python3
"""`scripts/demo --cluster`: two gateway nodes on one PostgreSQL, one killed mid-run.

  1. a throwaway PostgreSQL server (initdb in a temporary folder, unix socket only)
  2. two nodes, demo-a and demo-b, on it (`fleet-gateway serve --store postgresql://...`)
  3. a TCP round robin in front of them (what a load balancer passing TLS through does)
  4. a simulated fleet through it, spread over both nodes
  5. demo-a killed with SIGKILL: every device it served reconnects through the round robin
     to demo-b and reports again; demo-b declares demo-a dead (`cluster status`)
  6. nothing lost: every reading a device had acknowledged is a row in PostgreSQL
Exits 0 when all of that held; otherwise one line `demo: FAILED: ...` naming the log to read.
`--quick` (scripts/demo --cluster --quick): a shorter fleet run, the same steps.
Run by `scripts/demo --cluster` after it made the CA (needs fleet-gateway, fleet-ca and
firmware-sim on PATH, and Debian's postgresql package).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICES = 20
FLEET_SECONDS, QUICK_FLEET_SECONDS = 30.0, 16.0
KILL_AFTER = 6.0  # seconds of the fleet's run before demo-a is killed
FAILOVER_BUDGET = 10.0  # every device back and reporting within this, or the demo fails


class Failed(Exception):
    pass


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def wait_for(what: str, predicate, seconds: float, *, alive=None):
    """Poll `predicate` (a log file or a query: nothing to be woken by) until it returns a
    true value; fail after `seconds`, or as soon as the process `alive` exits."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if alive is not None and alive.poll() is not None:
            raise Failed(f"{what}: the process exited with {alive.returncode}")
        if time.monotonic() > deadline:
            raise Failed(f"{what}: not within {seconds:g} s")
        time.sleep(0.05)


def log_lines(path: Path) -> list[dict]:
    out = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


class RoundRobin:
    """A TCP round robin on 127.0.0.1: each new connection goes to the next backend that
    accepts it (a refused one is skipped), bytes copied both ways untouched (TLS passes
    through, as through a load balancer in TCP mode)."""

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self.next = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        for _ in range(len(self.backends)):
            backend = self.backends[self.next % len(self.backends)]
            self.next += 1
            try:
                upstream = socket.create_connection(backend, timeout=2)
            except OSError:
                continue
            upstream.settimeout(None)
            threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
            _pipe(client, upstream)
            return
        client.close()

    def close(self) -> None:
        self.server.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


class Node:
    def __init__(self, name: str, url: str, ca_home: Path, logs: Path) -> None:
        self.name = name
        self.log = logs / f"{name}.jsonl"
        self.log.write_text("")
        self.stderr = open(logs / f"{name}.stderr", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["fleet-gateway", "serve", "--ca-home", str(ca_home), "--store", url,
             "--node", name, "--mqtt", "127.0.0.1:0", "--http", "off",
             "--log-file", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=self.stderr)
        line = wait_for(f"{name} did not start (see {self.log}, {self.stderr.name})",
                        lambda: next((r for r in log_lines(self.log)
                                      if r["event"] == "listening" and "mqtt" in r), None),
                        60, alive=self.proc)
        host, _, port = line["mqtt"].rpartition(":")
        self.address = (host, int(port))

    def connected(self, since: float = 0.0) -> set[str]:
        """Networks that connected to this node after `since` (epoch seconds)."""
        return {r["network"] for r in log_lines(self.log) if r["event"] == "connected"
                and _epoch(r["time"]) >= since}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


STORED_PER_NETWORK = """
SELECT n.uuid::text, count(*) FROM state_log l JOIN states s ON s.id = l.state_id
JOIN networks n ON n.id = s.network_id WHERE l.received_us >= %s GROUP BY n.uuid
"""


def stored(url: str, since_us: int = 0) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return dict(conn.execute(STORED_PER_NETWORK, (since_us,)).fetchall())


def run(ca_home: Path, pg_folder: Path, cleanup: list, fleet_seconds: float,
        kill_after: float) -> None:
    from gateway.storage.postgres.local_server import LocalPostgres

    logs = ROOT / "var" / "cluster" / "log"
    logs.mkdir(parents=True, exist_ok=True)
    bundles = ca_home / "cluster-devices"
    if not bundles.is_dir():
        step(f"{DEVICES} device bundles in {bundles}")
        subprocess.run(["fleet-ca", "issue", "device", "--count", str(DEVICES), "--out",
                        str(bundles)], check=True, stdout=subprocess.DEVNULL)

    step(f"PostgreSQL: a throwaway server in {pg_folder} (unix socket only)")
    server = LocalPostgres(pg_folder).start()
    cleanup.append(server.remove)
    url = server.create_database("fleetgate")
    print(f"store: {url}")

    step("two gateway nodes on it: demo-a and demo-b")
    nodes = {}
    for name in ("demo-a", "demo-b"):
        node = Node(name, url, ca_home, logs)
        cleanup.append(node.stop)
        nodes[name] = node
        print(f"{name}: MQTT over mTLS on {node.address[0]}:{node.address[1]} "
              f"(pid {node.proc.pid}, log {node.log})")
    a, b = nodes["demo-a"], nodes["demo-b"]
    balancer = RoundRobin([a.address, b.address])
    cleanup.append(balancer.close)
    print(f"round robin (TLS passed through): 127.0.0.1:{balancer.port}")

    step(f"a {DEVICES}-device fleet through the round robin for {fleet_seconds:g} s")
    events = logs / "fleet-events.jsonl"
    events.write_text("")
    fleet_out = logs / "fleet.json"
    with open(fleet_out, "w") as out:
        fleet = subprocess.Popen(
            ["firmware-sim", "fleet", "--bundles", str(bundles), "--count", str(DEVICES),
             "--rate", "2", "--duration", str(fleet_seconds), "--gateway",
             f"127.0.0.1:{balancer.port}", "--events", str(events), "--json",
             "--backoff-base", "0.2", "--backoff-max", "1"],
            stdout=out, stderr=subprocess.STDOUT)
    cleanup.append(lambda: fleet.poll() is None and fleet.kill())
    networks = {p.name for p in bundles.iterdir() if p.is_dir()}
    started = time.time()
    wait_for(f"not every device connected (see {events})",
             lambda: a.connected() | b.connected() >= networks, 60, alive=fleet)
    on_a, on_b = a.connected(), b.connected()
    print(f"demo-a serves {len(on_a)} devices, demo-b {len(on_b)}")
    if not on_a or not on_b:
        raise Failed("the round robin did not spread the fleet over both nodes")
    time.sleep(max(0.0, kill_after - (time.time() - started)))  # let it report a while

    step("SIGKILL to demo-a, mid-run")
    killed_at = time.time()
    a.proc.kill()
    a.proc.wait()
    print(f"demo-a (pid {a.proc.pid}) killed; its {len(on_a)} devices reconnect through "
          "the round robin")
    back = wait_for(
        f"demo-a's devices did not all reconnect to demo-b within {FAILOVER_BUDGET:g} s "
        f"(see {b.log})",
        lambda: on_a <= b.connected(killed_at) and time.time(), FAILOVER_BUDGET * 3,
        alive=fleet) - killed_at
    reporting = wait_for(
        f"demo-a's devices did not all report through demo-b (see {b.log})",
        lambda: on_a <= set(stored(url, int(killed_at * 1e6))) and time.time(),
        FAILOVER_BUDGET * 3, alive=fleet) - killed_at
    print(f"every device of demo-a back on demo-b in {back:.1f} s, each reporting again "
          f"(new rows from all {len(on_a)}) in {reporting:.1f} s")
    if reporting > FAILOVER_BUDGET:
        raise Failed(f"failover took {reporting:.1f} s (budget {FAILOVER_BUDGET:g} s)")

    step("cluster status (demo-a: declared dead once its heartbeat lapsed)")
    declared = wait_for("demo-b did not declare demo-a dead (see " f"{b.log})",
                        lambda: next((r for r in log_lines(b.log) if r["event"] == "node_dead"
                                      and r.get("node") == "demo-a"), None), 30, alive=b.proc)
    print(f"demo-b: {json.dumps(declared)}")
    status = subprocess.run(["fleet-gateway", "cluster", "status", "--store", url],
                            capture_output=True, text=True)
    print(status.stdout.rstrip())
    if status.returncode != 12:  # a node is not alive: that is the point
        raise Failed(f"cluster status exited {status.returncode}, not 12: {status.stderr}")

    step("the fleet runs to its end; then demo-b stops cleanly")
    try:
        fleet.wait(fleet_seconds + 60)
    except subprocess.TimeoutExpired:
        raise Failed(f"the fleet did not finish (see {fleet_out})") from None
    if fleet.returncode != 0:
        raise Failed(f"firmware-sim fleet exited {fleet.returncode} (see {fleet_out})")
    b.stop()
    result = json.loads(fleet_out.read_text().strip().splitlines()[-1])
    rows = stored(url)
    lost = {}
    for device in result["devices"]:
        have = rows.get(device["device"], 0)
        if have < device["acked"]:
            lost[device["device"]] = device["acked"] - have
    acked, total = result["totals"]["acked"], sum(rows.values())
    print(f"devices: {acked:,} readings acknowledged; PostgreSQL: {total:,} rows stored")
    if lost:
        raise Failed(f"{sum(lost.values())} acknowledged readings of {len(lost)} device(s) "
                     "are not in the store")
    print("nothing lost: every acknowledged reading is stored (per device)")


def main() -> int:
    ca_home = Path(os.environ.get("FLEET_CA_HOME", ROOT / "certs"))
    # Outside any private tmp: the unprivileged server user must reach the folder.
    pg_folder = Path(tempfile.mkdtemp(prefix="fleetgate-demo-pg-"))
    cleanup: list = []
    try:
        quick = "--quick" in sys.argv[1:]
        run(ca_home, pg_folder, cleanup, QUICK_FLEET_SECONDS if quick else FLEET_SECONDS,
            KILL_AFTER)
    except Failed as exc:
        print(f"\ndemo: FAILED: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a server that would not start, a tool missing: one line
        print(f"\ndemo: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        for undo in reversed(cleanup):
            with contextlib.suppress(Exception):
                undo()
        print(f"\nlogs: {ROOT / 'var' / 'cluster' / 'log'}")
    step("demo --cluster: every step worked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
