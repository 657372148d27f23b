"""`firmware-sim attack --resources` against a real `fleet-gateway serve` process: a short
smoke run (small sizes, a second per attack). It checks the table's shape and that every
attack ran and cleaned up; the goals themselves are timings, measured by bench/isolation.py,
never asserted here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
SIM = shutil.which("firmware-sim", path=str(BIN)) or "firmware-sim"
GATEWAY = shutil.which("fleet-gateway", path=str(BIN)) or "fleet-gateway"
ATTACKS = ["subscribe-freeze", "offline-fanout", "writer-starvation", "log-amplification",
           "http-slowloris", "pending-handshakes", "tls-flood"]
SMALL = ["--seconds", "1", "--baseline", "0.5", "--retained", "50", "--filters", "20",
         "--sessions", "5", "--fanout-publishes", "2", "--fanout-bytes", "1000",
         "--readings", "10", "--slow-http", "5", "--pending", "10", "--flooders", "1"]


@pytest.fixture
def served(ca_home, tmp_path):
    """A gateway child on port 0 (MQTT and HTTPS); yields (process, mqtt, http, data, log)."""
    data, log = tmp_path / "data", tmp_path / "gateway.log"
    proc = subprocess.Popen([GATEWAY, "serve", "--ca-home", str(ca_home.path),
                             "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0",
                             "--data", str(data)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ports: dict[str, str] = {}
    both = threading.Event()

    def read() -> None:
        with open(log, "a") as out:
            for line in proc.stderr:
                out.write(line)
                out.flush()
                if '"listening"' in line:
                    for kind in ("mqtt", "http"):
                        if m := re.search(rf'"{kind}"\s*:\s*"([^"]+)"', line):
                            ports[kind] = m.group(1)
                    if len(ports) == 2:
                        both.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert both.wait(30), f"no listening lines: {log.read_text()[-800:]}"
        yield proc, ports["mqtt"], ports["http"], data, log
    finally:
        proc.terminate()
        proc.wait(30)


def test_resources_runs_every_attack_and_prints_one_row_each(served, ca_home, make_device,
                                                            tmp_path):
    proc, mqtt, http, data, log = served
    attacker, victim = make_device(), make_device()
    operator = tmp_path / "operator"
    ca_home.issue_operator(operator, name="smoke")
    done = subprocess.run(
        [SIM, "attack", "--resources", "--bundle", str(attacker.dir), "--victim-bundle",
         str(victim.dir), "--gateway", mqtt, "--gateway-pid", str(proc.pid), "--data",
         str(data), "--log", str(log), "--http", http, "--operator", str(operator), "--json",
         *SMALL], capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr  # 1 = a timing goal missed: not judged here
    report = json.loads(done.stdout)
    rows = {r["attack"]: r for r in report["rows"]}
    assert list(rows) == ATTACKS
    for row in rows.values():
        for key in ("puback_p50_before", "puback_p99", "connect_p99", "rss_before",
                    "rss_peak", "data_growth", "acked_payload", "log_growth", "missed"):
            assert key in row, (key, row)
        assert row["rss_peak"] > 0 and row["pubacks"] > 0, row
    assert "50 retained, " in rows["subscribe-freeze"]["notes"]
    assert rows["subscribe-freeze"]["acked_payload"] > 0
    assert "5/5 offline `#` sessions" in rows["offline-fanout"]["notes"]
    assert rows["offline-fanout"]["acked_payload"] == 2 * 1000
    assert re.search(r"[1-9]\d* batches", rows["writer-starvation"]["notes"])
    assert re.search(r"[1-9]\d* SUBSCRIBE x \d+ refused", rows["log-amplification"]["notes"])
    assert rows["log-amplification"]["log_growth"] > 0  # the refusals were logged
    assert "slow connections held" in rows["http-slowloris"]["notes"]
    assert re.fullmatch(r"\d+/[1-9]\d*", rows["http-slowloris"]["operator_ok"])
    assert "connected" in rows["pending-handshakes"]["notes"]
    flood = re.search(r"MQTT: (\d+) handshakes answered, \d+ cut before TLS .*"
                      r"HTTPS: (\d+) handshakes answered", rows["tls-flood"]["notes"])
    assert flood and int(flood[1]) > 0 and int(flood[2]) > 0, rows["tls-flood"]["notes"]
    if done.returncode == 1:
        assert "goal missed: " in done.stderr
    # Cleaned up: the retained fill and fan-out publishes are cleared (a fresh `res/#`
    # subscriber gets only its own echo).
    from firmware_sim.bundle import load_bundle
    from firmware_sim.probe import Probe

    host, port = mqtt.rsplit(":", 1)
    b = load_bundle(attacker.dir)
    probe = Probe(host, int(port), ca=b.ca, cert=b.cert, key=b.key, client_id="check")
    assert probe.connect()[0]
    probe.subscribe("res/#")
    probe.publish("res/sync", b"sync")
    assert probe.wait_for(lambda m: m.topic == "res/sync")
    probe.close()
    assert [m.topic for m in probe.messages] == ["res/sync"]
