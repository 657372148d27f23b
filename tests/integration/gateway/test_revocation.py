"""Revocation without restart: the CRL changes, live sessions of revoked serials close."""

from __future__ import annotations

import shutil

import trio
from gwhelpers import Creds, MQTTTestClient

from ca.store import CAHome
from gateway.mqtt.packets import ConnAck, ConnectReturnCode, PingReq, PingResp


async def test_revoking_a_live_device_closes_its_session_with_reason_revoked(
    start_gateway, pki, net_b
):
    running = await start_gateway()
    victim_creds = pki.device()
    victim = await MQTTTestClient.open(running, victim_creds)
    assert await victim.connect("victim") == ConnAck(ConnectReturnCode.ACCEPTED, False)
    bystander = await MQTTTestClient.open(running, net_b)
    assert await bystander.connect("bystander") == ConnAck(ConnectReturnCode.ACCEPTED, False)
    started = trio.current_time()
    # The CA's inventory connection belongs to this thread: revoke here (it takes ms).
    pki.home.revoke(victim_creds.serial, reason="key-compromise")
    assert await victim.receive() is None  # closed by the gateway
    record = await running.logs.wait("disconnected", client_id="victim")
    elapsed = trio.current_time() - started
    print(f"\nrevoke -> session closed: {elapsed * 1000:.0f} ms")  # a figure, not a test
    assert record["reason"] == "REVOKED"
    assert record["serial"] == format(victim_creds.serial, "x")
    # Nothing else was touched.
    await bystander.send(PingReq())
    assert await bystander.receive() == PingResp()
    assert running.logs.find("disconnected", client_id="bystander") == []
    # And the revoked certificate cannot come back.
    try:
        again = await MQTTTestClient.open(running, victim_creds)
        assert await again.connect("victim") is None
    except trio.BrokenResourceError:
        pass
    await running.logs.wait("refused", cause="CERT_REVOKED")


async def test_half_written_crl_keeps_the_old_one_in_force(start_gateway, pki, net_a, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(pki.path, home, ignore=shutil.ignore_patterns("*.key", "inventory.db"))
    shutil.copy(pki.path / "server" / "server.key", home / "server" / "server.key")
    running = await start_gateway(ca_home=home)
    (home / "crl.pem").write_bytes(b"-----BEGIN X509 CRL-----\ngarbage\n")
    record = await running.logs.wait("tls_reload_failed")
    assert "CRL" in record["detail"]
    client = await MQTTTestClient.open(running, net_a)
    assert await client.connect("still-works") == ConnAck(ConnectReturnCode.ACCEPTED, False)


async def test_new_root_and_rotated_server_certificate_apply_without_dropping_sessions(
    start_gateway, pki, net_a, tmp_path
):
    home = tmp_path / "home"
    shutil.copytree(pki.path, home, ignore=shutil.ignore_patterns("*.key", "inventory.db"))
    shutil.copy(pki.path / "server" / "server.key", home / "server" / "server.key")
    running = await start_gateway(ca_home=home)
    old = await MQTTTestClient.open(running, net_a)
    assert await old.connect("old") == ConnAck(ConnectReturnCode.ACCEPTED, False)
    # A second CA joins: its root is appended, its CRL too; the server certificate rotates.
    other = CAHome.init(tmp_path / "other", passphrase=None, name="second")
    bundle = other.issue_devices(tmp_path / "b2", count=1)[0]
    files = pki.home.issue_server(tmp_path / "rotated", ips=["127.0.0.1"])
    (home / "root.crt").write_bytes(pki.root.read_bytes() + other.root_pem)
    (home / "crl.pem").write_bytes(
        (pki.path / "crl.pem").read_bytes() + (other.path / "crl.pem").read_bytes()
    )
    shutil.copy(files.cert_path, home / "server" / "server.crt")
    shutil.copy(files.key_path, home / "server" / "server.key")
    await running.logs.wait("tls_reloaded")
    newcomer = await MQTTTestClient.open(
        running, Creds(bundle.cert_path, bundle.key_path, pki.root)
    )
    assert await newcomer.connect("new") == ConnAck(ConnectReturnCode.ACCEPTED, False)
    await old.send(PingReq())
    assert await old.receive() == PingResp()
