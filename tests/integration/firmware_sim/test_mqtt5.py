"""`firmware-sim --mqtt 5` against the real gateway: it declares and reports as with 3.1.1,
and says the reason code and reason string of a refused report and of the gateway's
DISCONNECT."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import trio
from conftest import GatewayRunner, Watched
from firmware_sim.bundle import load_bundle
from firmware_sim.device import Backoff, SimDevice

from gateway.revocation import reload_tls

SIM = shutil.which("firmware-sim", path=str(Path(sys.executable).parent)) or "firmware-sim"


async def test_run_mqtt5_declares_reports_and_every_report_is_acknowledged(
        make_device, gateway_runner):
    bundle = make_device()
    done = await trio.run_process(
        [SIM, "run", "--json", "--mqtt", "5", "--bundle", str(bundle.dir), "--rate", "10",
         "--duration", "2", "--gateway", f"127.0.0.1:{gateway_runner.port}"],
        capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    events = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert any(e["event"] == "declared" for e in events)
    summary = events[-1]
    assert summary["connects"] == 1 and summary["errors"] == 0
    assert summary["acked"] == summary["sent"] >= 10 and summary["refused"] == 0


async def test_fleet_mqtt5_in_two_processes_connects_every_device_in_mqtt5(
        ca_home, gateway_runner, tmp_path):
    bundles = tmp_path / "bundles"
    ca_home.issue_devices(bundles, count=4)
    done = await trio.run_process(
        [SIM, "fleet", "--bundles", str(bundles), "--processes", "2", "--rate", "5",
         "--duration", "2", "--json", "--mqtt", "5", "--session-expiry", "60",
         "--gateway", f"127.0.0.1:{gateway_runner.port}"],
        capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout)
    assert len(result["devices"]) == 4
    assert all(d["connects"] == 1 and d["acked"] > 0 for d in result["devices"])
    assert result["totals"]["refused"] == 0
    # They spoke MQTT 5: each session is kept for the expiry it asked for (3.1.1: None).
    kept = [state.expiry for state in gateway_runner.gateway.broker.sessions.all()]
    assert kept == [60] * 4


async def test_a_report_over_the_networks_quota_is_said_with_0x97_and_its_rule(
        nursery, ca_home, make_device, sim_loop, tmp_path):
    # One byte of quota: the first readings are stored, every later one is refused.
    runner = GatewayRunner(nursery, ca_home.path, tmp_path / "var",
                           {"max_stored_bytes_per_network": 1})
    await runner.start()
    watched: Watched
    device = SimDevice(load_bundle(make_device().dir), sim_loop, "127.0.0.1", runner.port,
                       rate=20, mqtt="5", backoff=Backoff(0.05, 0.5),
                       on_event=lambda d, k, f: watched.events.put((k, f)))
    watched = Watched(device)
    device.start()
    try:

        refused = await watched.wait("report_refused")
        assert refused["reason_code"] == "0x97"  # quota exceeded
        assert refused["reason_string"].startswith("QUOTA: ")
        assert device.stats.refused >= 1
        assert device.stats.acked >= 1  # the first readings were stored: only then refused
    finally:
        device.stop(drain=0)


async def test_the_gateways_disconnect_for_a_revocation_is_said_with_0x98(
        ca_home, make_device, gateway_runner, sim_device):
    bundle = make_device()
    watched = sim_device(bundle.dir, mqtt="5")
    await watched.wait("declared")
    ca_home.revoke(bundle.serial)
    reload_tls(gateway_runner.gateway, "test", force=True)  # not waiting for its file poll
    gone = await watched.wait("disconnected")
    assert gone["reason_code"] == "0x98"  # administrative action
    assert gone["reason"] == "Administrative action"
