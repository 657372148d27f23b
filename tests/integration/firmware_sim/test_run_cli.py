"""`firmware-sim run` as a process: its own model file, its event lines, its exit codes."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import trio

from gateway.revocation import reload_tls

SIM = shutil.which("firmware-sim", path=str(Path(sys.executable).parent)) or "firmware-sim"

METER = {"devices": [{"name": "meter", "values": [
    {"name": "power", "permission": "r", "number": {"min": 0, "max": 5000, "step": 1}},
    {"name": "label", "permission": "rw", "string": {"max": 16}},
]}]}


async def _run(*args: str) -> tuple[int, list[dict], str]:
    done = await trio.run_process([SIM, "run", "--json", *args], capture_stdout=True,
                                  capture_stderr=True, check=False)
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    return done.returncode, lines, done.stderr.decode()


async def test_run_declares_a_model_file_reports_and_ends_with_a_summary(
        make_device, gateway_runner, tmp_path):
    bundle = make_device()
    model = tmp_path / "meter.json"
    model.write_text(json.dumps(METER))
    code, events, err = await _run("--bundle", str(bundle.dir), "--model", str(model),
                                   "--rate", "10", "--duration", "2", "--seed", "4",
                                   "--gateway", f"127.0.0.1:{gateway_runner.port}")
    assert code == 0, err
    kinds = [e["event"] for e in events]
    # The firmware samples from boot, online or not: on a loaded machine a tick may come
    # before the connection is up. Nothing else does (no failed attempt, no retry).
    assert [k for k in kinds if k != "tick"][0] == "connected"
    assert kinds[-2:] == ["stopped", "summary"]
    declared = next(e for e in events if e["event"] == "declared")
    assert set(declared["devices"]) == {"meter", "meter/power", "meter/label"}
    summary = events[-1]
    assert summary["connects"] == 1 and summary["errors"] == 0
    assert summary["acked"] == summary["sent"] >= 10
    power = await gateway_runner.history(declared["devices"]["meter/power"])
    ticks = [e for e in events if e["event"] == "tick" and e["online"]]
    assert {float(r.data) for r in power} >= {e["meter/power"] for e in ticks}


async def test_run_exits_6_with_the_reasons_when_the_model_is_rejected(
        make_device, gateway_runner, tmp_path):
    bundle = make_device()
    model = tmp_path / "bad.json"
    model.write_text(json.dumps({"devices": [{"name": "a/b", "values": []}]}))
    code, events, err = await _run("--bundle", str(bundle.dir), "--model", str(model),
                                   "--duration", "1.5",
                                   "--gateway", f"127.0.0.1:{gateway_runner.port}")
    assert code == 6
    assert any(e["event"] == "model_rejected" for e in events)
    assert err.startswith("firmware-sim: error: the gateway rejected the model: devices[0].name")
    assert len(err.strip().splitlines()) == 1


async def test_run_with_a_revoked_certificate_never_connects_and_exits_5(
        ca_home, gateway_runner, tmp_path):
    [bundle] = ca_home.issue_devices(tmp_path / "revoked", count=1)
    ca_home.revoke(bundle.serial)
    reload_tls(gateway_runner.gateway, "test", force=True)  # not waiting for its file poll
    code, events, err = await _run("--bundle", str(bundle.dir), "--duration", "1.5",
                                   "--backoff-base", "0.1",
                                   "--gateway", f"127.0.0.1:{gateway_runner.port}")
    assert code == 5 and "never connected" in err
    assert not any(e["event"] == "connected" for e in events)
    assert sum(e["event"] in ("disconnected", "connect_failed") for e in events) >= 2
