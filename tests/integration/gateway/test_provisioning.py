"""Provisioning by claim and renewal over MQTT: a real signer (`ca.signer.serve_signer`) on a
unix socket, a real gateway, paho devices over real TLS."""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from gwhelpers import Creds, PahoClient

from ca import claims
from ca.keys import private_key_pem
from ca.signer import JsonLog, ServeLimits, Signer, SignerLimits, serve_signer


def csr_and_key(tmp, name):
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp / f"{name}.key").write_bytes(private_key_pem(key))
    (tmp / f"{name}.key").chmod(0o600)
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(
        key, hashes.SHA256())
    return csr.public_bytes(Encoding.PEM), tmp / f"{name}.key"


@pytest.fixture
async def signer(pki, nursery, tmp_path):
    # No grace: the sweep may run at the real now (the CRL it writes is dated then, and the
    # session-wide CA home's CRL must stay valid for the other tests).
    s = Signer(pki.home, SignerLimits(supersede_grace=dt.timedelta(0)))
    sock = tmp_path / "signer.sock"
    await nursery.start(lambda task_status: serve_signer(
        s, unix=sock, limits=ServeLimits(sweep_interval=3600), log=JsonLog(io.StringIO()),
        task_status=task_status))
    return s, f"unix:{sock}"


def claim_creds(pki, tmp, uses):
    files = claims.issue_claim(pki.home, tmp / f"claim-{uuid.uuid4().hex[:6]}",
                               batch="line3", uses=uses)
    return Creds(files.cert_path, files.key_path, files.ca_path, serial=files.serial)


async def ask(running, creds, payload, topic="provision/request"):
    client = PahoClient(running, creds)
    await client.connect()
    assert await client.subscribe("provision/+", 1) is not None
    await client.publish(topic, payload, 1)
    return client, await client.message()


async def test_a_claim_gets_a_certificate_then_the_device_connects_and_renews(
        pki, signer, start_gateway, tmp_path):
    sig, target = signer
    running = await start_gateway(signer=target)
    claim = claim_creds(pki, tmp_path, uses=1)
    csr, key = csr_and_key(tmp_path, "dev")
    client, msg = await ask(running, claim, csr)
    assert msg.topic == "provision/accepted"
    doc = json.loads(msg.payload)
    network = uuid.UUID(doc["network"])
    (tmp_path / "dev.crt").write_text(doc["certificate"])
    await client.close()
    # The claim is spent: a second request is refused with the signer's reason.
    csr2, _ = csr_and_key(tmp_path, "dev2")
    client, msg = await ask(running, claim, csr2)
    assert msg.topic == "provision/rejected"
    assert json.loads(msg.payload)["reason"] == "claim_exhausted"
    provisioned = running.gateway.metrics.provisioning.provision_requests
    assert provisioned["accepted"].value == 1 and provisioned["claim_exhausted"].value == 1
    await client.close()
    # The device reconnects with its own identity, in its own jail.
    device = PahoClient(running, Creds(tmp_path / "dev.crt", key, pki.root), "dev")
    await device.connect()
    await running.logs.wait("connected", network=str(network), client_id="dev")
    # Renewal over MQTT: same network, new certificate; the old one scheduled as superseded.
    await device.subscribe("cert/+", 1)
    csr3, _ = csr_and_key(tmp_path, "dev3")
    await device.publish("cert/renew", csr3, 1)
    msg = await device.message()
    assert msg.topic == "cert/renewed", msg.payload
    renewed = json.loads(msg.payload)
    assert renewed["network"] == str(network) and renewed["serial"] != doc["serial"]
    assert running.gateway.metrics.provisioning.renewal_requests["accepted"].value == 1
    old = int(doc["serial"], 16)
    due = pki.home.inventory.connection.execute(
        "SELECT due FROM supersede WHERE serial = ?", (format(old, "x"),)).fetchone()
    assert due is not None
    # Past the grace, the signer's sweep revokes the old certificate; the gateway reads the
    # new CRL and closes the session still using it.
    from ca.inventory import from_iso

    assert from_iso(due[0]) <= dt.datetime.now(dt.UTC)
    assert sig.sweep(dt.datetime.now(dt.UTC)) == 1
    await running.logs.wait("revoked", network=str(network), client_id="dev")
    await device.close()


async def test_a_claim_may_only_ask_for_provisioning(pki, signer, start_gateway, tmp_path):
    _, target = signer
    running = await start_gateway(signer=target)
    claim = claim_creds(pki, tmp_path, uses=5)
    client = PahoClient(running, claim, "c1")
    await client.connect()
    codes = await client.subscribe("report/x", 1)
    assert [int(getattr(c, "value", c)) for c in codes] == [128]
    client.client.publish("report/t", b"{}", 0)  # refused: the connection is closed
    await running.logs.wait("publish_denied", batch="line3", topic="report/t")
    await running.logs.wait("provision_disconnected", client_id="c1", reason="CLIENT_ERROR")
    await trio.to_thread.run_sync(lambda: client.disconnected.wait(20))
    assert client.disconnected.is_set()
    await client.close()


async def test_a_revoked_claim_is_answered_with_the_reason(pki, signer, start_gateway,
                                                            tmp_path):
    _, target = signer
    running = await start_gateway(signer=target)
    claim = claim_creds(pki, tmp_path, uses=5)
    client = PahoClient(running, claim, "c2")
    await client.connect()
    await client.subscribe("provision/+", 1)
    pki.home.revoke(claim.serial)
    csr, _ = csr_and_key(tmp_path, "d")
    await client.publish("provision/request", csr, 1)
    msg = await client.message()
    assert msg.topic == "provision/rejected"
    assert json.loads(msg.payload)["reason"] == "claim_revoked"
    await client.close()


async def test_without_a_signer_a_claim_is_refused_at_connect(pki, start_gateway, tmp_path):
    running = await start_gateway()
    claim = claim_creds(pki, tmp_path, uses=1)
    client = PahoClient(running, claim, "c3")
    _, rc = await client.connect()
    assert str(rc) == "Not authorized"  # CONNACK 5
    record = await running.logs.wait("refused", batch="line3")
    assert record["cause"].startswith("CLAIM_WITHOUT_SIGNER")
    await client.close()


async def test_the_simulator_provisions_by_claim_then_renews_its_bundle(
        pki, signer, start_gateway, tmp_path):
    from firmware_sim.bundle import load_bundle
    from firmware_sim.enrol import provision, renew, renewal_due

    _, target = signer
    running = await start_gateway(signer=target)
    claim = claim_creds(pki, tmp_path, uses=1)
    out = tmp_path / "mine"
    doc = await trio.to_thread.run_sync(
        provision, claim.cert.parent, out, running.host, running.port)
    bundle = load_bundle(out)
    assert str(bundle.network) == doc["network"]
    assert (out / "device.key").stat().st_mode & 0o777 == 0o600
    renewed = await trio.to_thread.run_sync(renew, out, running.host, running.port)
    assert renewed["network"] == doc["network"] and renewed["serial"] != doc["serial"]
    cert = x509.load_pem_x509_certificates((out / "device.crt").read_bytes())[0]
    assert format(cert.serial_number, "x") == renewed["serial"]
    # Due at two thirds of its lifetime, by the clock passed in.
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    assert not renewal_due(out / "device.crt", start + (end - start) / 2)
    assert renewal_due(out / "device.crt", start + (end - start) * 3 / 4)
    # The renewed bundle is a working identity.
    device = PahoClient(running, Creds(out / "device.crt", out / "device.key", out / "ca.crt"),
                        "renewed")
    await device.connect()
    await running.logs.wait("connected", network=doc["network"], client_id="renewed")
    await device.close()


async def test_a_silent_signer_costs_the_device_one_signer_timeout(
        pki, start_gateway, tmp_path, nursery):
    # A "signer" that accepts and never answers: what the test is about is the deadline.
    sock_path = tmp_path / "silent.sock"
    listener = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await listener.bind(str(sock_path))
    listener.listen(8)
    held = []

    async def hold() -> None:
        while True:
            conn, _ = await listener.accept()
            held.append(conn)

    nursery.start_soon(hold)
    running = await start_gateway(signer=f"unix:{sock_path}", signer_timeout=0.5)
    claim = claim_creds(pki, tmp_path, uses=1)
    csr, _ = csr_and_key(tmp_path, "t")
    client, msg = await ask(running, claim, csr)
    assert msg.topic == "provision/rejected"
    assert json.loads(msg.payload)["reason"] == "signer_timeout"
    assert held, "the gateway did reach the signer"
    await client.close()


async def test_claim_connections_are_capped_per_claim(pki, signer, start_gateway, tmp_path):
    _, target = signer
    running = await start_gateway(signer=target, max_connections_per_claim=1)
    claim = claim_creds(pki, tmp_path, uses=1)
    first = PahoClient(running, claim, "first")
    await first.connect()
    await running.logs.wait("provision_connected", client_id="first")
    second = PahoClient(running, claim, "second")
    _, rc = await second.connect()
    assert str(rc) == "Server unavailable"  # CONNACK 3
    await running.logs.wait("refused", cause="max_connections_per_claim")
    assert running.gateway.metrics.mqtt.throttled["max_connections_per_claim"].value == 1
    await second.close()
    await first.close()


async def test_renewal_without_a_signer_is_answered_no_signer(pki, start_gateway, net_a):
    running = await start_gateway()
    device = PahoClient(running, net_a, "r")
    await device.connect()
    await device.subscribe("cert/+", 1)
    await device.publish("cert/renew", b"-----BEGIN CERTIFICATE REQUEST-----\n", 1)
    msg = await device.message()
    assert msg.topic == "cert/rejected"
    assert json.loads(msg.payload)["reason"] == "no_signer"
    assert running.gateway.metrics.provisioning.renewal_requests["no_signer"].value == 1
    await device.close()
