"""`firmware-sim attack` against the real gateway: every attempt refused or contained.

And the matrix is not tuned to pass: pointed at a gateway that admits anyone, it must
report the breach and exit 1.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

SIM = shutil.which("firmware-sim", path=str(Path(sys.executable).parent)) or "firmware-sim"


async def _attack(*args: str) -> tuple[int, str, str]:
    done = await trio.run_process([SIM, "attack", *args], capture_stdout=True,
                                  capture_stderr=True, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_attack_matrix_is_all_refused_or_contained_with_a_victim(
        ca_home, gateway_runner, make_device):
    attacker, victim = make_device(), make_device()
    # The revoked attempt reuses a serial the CRL lists: make sure there is one, in force.
    from gateway.revocation import reload_tls

    ca_home.revoke(make_device().serial)
    reload_tls(gateway_runner.gateway, "test")
    code, out, err = await _attack(
        "--bundle", str(attacker.dir), "--victim-bundle", str(victim.dir),
        "--ca-home", str(ca_home.path), "--gateway", f"127.0.0.1:{gateway_runner.port}",
        "--json")
    assert code == 0, out + err
    rows = [json.loads(line) for line in out.splitlines()]
    verdicts = {r["attempt"]: r["verdict"] for r in rows}
    assert "GOT THROUGH" not in verdicts.values()
    assert "not tried" not in verdicts.values()  # the CA home makes every certificate
    for attempt in ("no client certificate", "self-signed certificate naming the victim",
                    "another CA's certificate naming the victim",
                    "expired certificate of our CA naming the victim",
                    "our server certificate used as a client's", "revoked certificate of our CA",
                    "subscribe $SYS/#", "publish $SYS/broker/clients"):
        assert verdicts[attempt] == "refused", (attempt, rows)
    assert verdicts["subscribe #"] == "contained"
    [takeover] = [r for r in rows if r["attempt"].startswith("session takeover")]
    assert takeover["verdict"] == "contained"
    assert "found its queued message" in takeover["outcome"]
    assert len(rows) == 22


MOSQUITTO = Path("/usr/sbin/mosquitto")


@pytest.mark.skipif(not MOSQUITTO.exists(), reason="needs the mosquitto broker (Debian "
                    "package mosquitto, in TEST_DEBS)")
async def test_attack_reports_the_leak_of_a_broker_without_a_jail(ca_home, make_device,
                                                                  tmp_path):
    # mosquitto with real mutual TLS and our CRL, but no jail: one topic space for all.
    # Identities are still checked, but `#` reads the victim's traffic: the matrix must
    # say so and exit 1.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conf = tmp_path / "mosquitto.conf"
    conf.write_text("\n".join([
        "per_listener_settings false", f"user {pwd.getpwuid(os.geteuid()).pw_name}",
        "persistence false", "log_dest stderr", "log_type all",
        f"listener {port} 127.0.0.1", f"cafile {ca_home.path / 'root.crt'}",
        f"certfile {ca_home.path / 'server' / 'server.crt'}",
        f"keyfile {ca_home.path / 'server' / 'server.key'}",
        f"crlfile {ca_home.path / 'crl.pem'}",
        "require_certificate true", "allow_anonymous true", ""]))
    attacker, victim = make_device(), make_device()
    broker = await trio.lowlevel.open_process([str(MOSQUITTO), "-c", str(conf)],
                                              stderr=subprocess.PIPE)
    try:
        seen = b""
        with trio.fail_after(20):
            while b"Opening ipv4 listen socket" not in seen:
                chunk = await broker.stderr.receive_some(4096)
                assert chunk, seen.decode()
                seen += chunk
        code, out, _err = await _attack(
            "--bundle", str(attacker.dir), "--victim-bundle", str(victim.dir),
            "--gateway", f"127.0.0.1:{port}", "--json")
    finally:
        broker.terminate()
        await broker.wait()
    rows = [json.loads(line) for line in out.splitlines()]
    verdicts = {r["attempt"]: r["verdict"] for r in rows}
    assert code == 1
    assert verdicts["subscribe #"] == "GOT THROUGH"
    [takeover] = [r for r in rows if r["attempt"].startswith("session takeover")]
    assert takeover["verdict"] == "GOT THROUGH", takeover  # it read the victim's queue
    assert verdicts["subscribe $SYS/#"] != "GOT THROUGH"  # mosquitto's own, not the victim's
    assert verdicts["no client certificate"] == "refused"  # mosquitto does check certificates


async def test_attack_without_a_victim_bundle_watches_one_side_and_names_what_it_lacks(
        ca_home, gateway_runner, make_device, make_odd_device, tmp_path):
    attacker = make_device()
    given = tmp_path / "attack-certs"
    expired = make_odd_device("expired")
    shutil.copytree(expired.dir, given / "expired")
    server = ca_home.path / "server"
    (given / "server").mkdir()
    shutil.copy(server / "server.crt", given / "server" / "server.crt")
    shutil.copy(server / "server.key", given / "server" / "server.key")
    code, out, err = await _attack("--bundle", str(attacker.dir), "--attack-certs", str(given),
                                   "--gateway", f"127.0.0.1:{gateway_runner.port}")
    assert code == 0, out + err
    assert "leakage is watched from the attacker's side only" in out
    rows = {line.split("  ")[0]: line for line in out.splitlines()}
    assert "refused" in rows["expired certificate of our CA naming the victim"]
    assert "refused" in rows["our server certificate used as a client's"]
    assert "not tried" in rows["revoked certificate of our CA"]
    assert "--attack-certs DIR/revoked/ or --ca-home" in rows["revoked certificate of our CA"]
    assert err.strip().endswith("21 attempts, 0 got through, 1 not tried")


async def test_attack_on_a_gateway_that_is_not_there_is_exit_5(make_device):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, _out, err = await _attack("--bundle", str(make_device().dir),
                                    "--gateway", f"127.0.0.1:{port}")
    assert code == 5
    assert err.strip().splitlines() == [
        f"firmware-sim: error: cannot reach the gateway at 127.0.0.1:{port}: Connection refused"]
