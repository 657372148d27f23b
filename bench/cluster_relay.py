"""Cross-node relay rate and latency: two `fleet-gateway serve --store` nodes on a throwaway
PostgreSQL, a paho publisher on node A and a paho subscriber of the same network on node B,
beside the same pair on one node (the local baseline), in one run.

    python -m bench.cluster_relay [--messages 5000] [--latency 500]

Rate: QoS 0 messages sent back to back, divided by the time until the subscriber has them
all. Latency: QoS 1 messages sent one at a time, each carrying its send time; p50/p99 of
receive time minus send time (one machine: one clock). Printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho

from ca.store import CAHome
from gateway.storage.postgres.local_server import LocalPostgres

EXE = shutil.which("fleet-gateway", path=str(Path(sys.executable).parent)) or "fleet-gateway"
WAIT = 60.0


class Node:
    def __init__(self, home: Path, url: str, name: str) -> None:
        self.proc = subprocess.Popen(
            [EXE, "serve", "--ca-home", str(home), "--mqtt", "127.0.0.1:0", "--http", "off",
             "--store", url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.port = 0
        for line in self.proc.stderr:  # type: ignore[union-attr]
            record = json.loads(line)
            if record["event"] == "listening" and "mqtt" in record:
                self.port = int(record["mqtt"].rsplit(":", 1)[1])
                break
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(WAIT)


def client(bundle, port: int, client_id: str) -> tuple[paho.Client, queue.Queue]:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=paho.MQTTv311)
    c.tls_set(str(bundle.ca_path), str(bundle.cert_path), str(bundle.key_path))
    got: queue.Queue = queue.Queue()
    ready: queue.Queue = queue.Queue()
    c.on_message = lambda cl, u, m: got.put((time.perf_counter(), m.payload))
    c.on_connect = lambda cl, u, f, rc, p: ready.put(rc)
    c.on_subscribe = lambda cl, u, mid, codes, p: ready.put(codes)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port, 60)
    c.loop_start()
    ready.get(timeout=WAIT)
    return c, got


def measure(pub_port: int, sub_port: int, pub_b, sub_b, messages: int, samples: int
            ) -> dict[str, float]:
    sub, got = client(sub_b, sub_port, f"sub-{uuid.uuid4().hex[:6]}")
    sub.subscribe("bench/#", 1)
    time.sleep(1.0)  # the subscription's interest reaches the other node (milliseconds)
    pub, _ = client(pub_b, pub_port, f"pub-{uuid.uuid4().hex[:6]}")
    lat = []
    for _ in range(samples):
        info = pub.publish("bench/lat", str(time.perf_counter()).encode(), 1)
        info.wait_for_publish(WAIT)
        at, payload = got.get(timeout=WAIT)
        lat.append(at - float(payload))
    start = time.perf_counter()
    for i in range(messages):
        pub.publish("bench/rate", b"%d" % i, 0)
    last = start
    for _ in range(messages):
        last, _ = got.get(timeout=WAIT)
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
    lat.sort()
    return {"rate": messages / (last - start), "p50_ms": statistics.median(lat) * 1e3,
            "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1e3}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cluster_relay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--latency", type=int, default=500)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # PostgreSQL runs as its own user (as root: `postgres`)
        home = CAHome.init(work / "ca", passphrase=None, name="relay bench")
        home.issue_server(home.path / "server", dns=["localhost"], ips=["127.0.0.1"])
        network = uuid.uuid4()
        pub_b = home.issue_devices(work / "pub", count=1, network=network)[0]
        sub_b = home.issue_devices(work / "sub", count=1, network=network)[0]
        pg = LocalPostgres(work / "pg").start()
        try:
            url = pg.create_database("relay")
            a, b = Node(home.path, url, "a"), Node(home.path, url, "b")
            try:
                local = measure(a.port, a.port, pub_b, sub_b, args.messages, args.latency)
                cross = measure(a.port, b.port, pub_b, sub_b, args.messages, args.latency)
            finally:
                a.stop()
                b.stop()
        finally:
            pg.stop()
    print(f"{'path':<14}{'msg/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, r in (("one node", local), ("across nodes", cross)):
        print(f"{name:<14}{r['rate']:>10.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}")
    print(f"across/one: rate x{cross['rate'] / local['rate']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
