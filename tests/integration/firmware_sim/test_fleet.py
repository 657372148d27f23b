"""`firmware-sim fleet` as a process against the real gateway: 50 devices at once."""

from __future__ import annotations

import functools
import json
import shutil
import sys
from pathlib import Path

import trio

SIM = shutil.which("firmware-sim", path=str(Path(sys.executable).parent)) or "firmware-sim"


async def test_fleet_of_50_all_connect_report_and_are_acknowledged(ca_home, gateway_runner,
                                                                    tmp_path):
    bundles = tmp_path / "bundles"
    ca_home.issue_devices(bundles, count=50)
    events = tmp_path / "events.jsonl"
    done = await trio.run_process(
        [SIM, "fleet", "--bundles", str(bundles), "--count", "50", "--rate", "2",
         "--duration", "4", "--json", "--events", str(events),
         "--gateway", f"127.0.0.1:{gateway_runner.port}"],
        capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout)
    totals, devices = result["totals"], result["devices"]
    assert len(devices) == 50 and len({d["device"] for d in devices}) == 50
    assert all(d["connects"] >= 1 and d["acked"] > 0 for d in devices)
    assert totals["acked"] == totals["sent"]  # each device drained its acks before leaving
    assert totals["errors"] == 0 and totals["dropped"] == 0
    declared = {json.loads(line)["device"] for line in events.read_text().splitlines()
                if json.loads(line)["event"] == "declared"}
    assert len(declared) == 50


async def test_fleet_in_two_processes_sums_both(ca_home, gateway_runner, tmp_path):
    bundles = tmp_path / "bundles"
    ca_home.issue_devices(bundles, count=6)
    done = await trio.run_process(
        [SIM, "fleet", "--bundles", str(bundles), "--processes", "2", "--rate", "5",
         "--duration", "2", "--json", "--gateway", f"127.0.0.1:{gateway_runner.port}"],
        capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout)
    assert len(result["devices"]) == 6
    assert all(d["acked"] > 0 for d in result["devices"])
    assert result["totals"]["acked"] == sum(d["acked"] for d in result["devices"])


async def test_fleet_without_a_gateway_says_so_in_one_line(ca_home, tmp_path):
    bundles = tmp_path / "bundles"
    ca_home.issue_devices(bundles, count=2)
    with trio.socket.socket() as probe:  # a port nobody listens on
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = await trio.run_process(
        [SIM, "fleet", "--bundles", str(bundles), "--duration", "1",
         "--gateway", f"127.0.0.1:{port}"],
        capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 5
    assert done.stderr.decode().strip().splitlines() == [
        f"firmware-sim: error: no device connected to 127.0.0.1:{port}"]


async def test_fleet_makes_its_own_bundles_and_shows_a_live_line_on_a_tty(
        ca_home, gateway_runner, tmp_path):
    import os
    import pty

    controller, terminal = pty.openpty()
    env = {**os.environ, "FLEET_CA_HOME": str(ca_home.path),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    bundles = tmp_path / "made"
    try:
        done = await trio.run_process(
            [SIM, "fleet", "--bundles", str(bundles), "--make-bundles", "--count", "3",
             "--rate", "5", "--duration", "2", "--gateway", f"127.0.0.1:{gateway_runner.port}"],
            capture_stdout=True, stderr=terminal, env=env, check=False)
        os.close(terminal)
        screen = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal side is closed and drained
                break
            if not chunk:
                break
            screen += chunk
    finally:
        os.close(controller)
    assert done.returncode == 0, screen.decode(errors="replace")
    assert len([d for d in bundles.iterdir() if (d / "device.crt").is_file()]) == 3
    assert b"\rconnected 3/3  sent " in screen  # the live line, rewritten in place
    table = done.stdout.decode()
    assert "total (3 devices)" in table


async def test_fleet_without_duration_runs_until_sigterm_then_stops_cleanly(
        ca_home, gateway_runner, tmp_path):
    import os
    import signal

    bundles = tmp_path / "bundles"
    ca_home.issue_devices(bundles, count=3)
    events = tmp_path / "events.fifo"
    os.mkfifo(events)
    out = tmp_path / "out.json"
    argv = [SIM, "fleet", "--bundles", str(bundles), "--rate", "5", "--json",
            "--events", str(events), "--gateway", f"127.0.0.1:{gateway_runner.port}"]
    with out.open("wb") as sink:
        async with trio.open_nursery() as nursery:
            proc = await nursery.start(functools.partial(
                trio.run_process, argv, stdout=sink, capture_stderr=True, check=False))
            declared: set[str] = set()
            seen_term = trio.Event()

            def read_events(token: trio.lowlevel.TrioToken) -> None:
                with open(events, encoding="utf-8") as fifo:  # EOF once the fleet closes it
                    for line in fifo:
                        event = json.loads(line)
                        if event["event"] == "declared":
                            declared.add(event["device"])
                            if len(declared) == 3:
                                trio.from_thread.run_sync(seen_term.set, trio_token=token)

            nursery.start_soon(trio.to_thread.run_sync, read_events,
                               trio.lowlevel.current_trio_token())
            with trio.fail_after(60):
                await seen_term.wait()
                proc.send_signal(signal.SIGTERM)
                await proc.wait()
    assert proc.returncode == 0
    assert len(declared) == 3
    totals = json.loads(out.read_text())["totals"]
    assert totals["connects"] == 3 and totals["acked"] == totals["sent"] > 0
