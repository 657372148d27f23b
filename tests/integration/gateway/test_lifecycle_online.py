"""The online lifecycle's gateway seams, with a real signer (`ca.signer.serve_signer`) on a
unix socket, a real gateway and paho devices over real TLS: a renewed certificate's first
connection has the signer revoke the one it replaced at once (not after the grace), and a
claim revoked while its provisioning session is live is cut as a revoked device is."""

from __future__ import annotations

import io
import json
import uuid

import pytest
import trio
from gwhelpers import Creds, MQTTTestClient, PahoClient
from test_provisioning import ask, claim_creds, csr_and_key

from ca.signer import JsonLog, ServeLimits, Signer, serve_signer


@pytest.fixture
async def graceful_signer(pki, nursery, tmp_path):
    """A signer with its default grace (7 days) and no sweep during the test: only a first
    use can revoke a renewed device's old certificate now."""
    s = Signer(pki.home)
    sock = tmp_path / "signer.sock"
    await nursery.start(lambda task_status: serve_signer(
        s, unix=sock, limits=ServeLimits(sweep_interval=3600), log=JsonLog(io.StringIO()),
        task_status=task_status))
    return s, f"unix:{sock}"


async def test_the_renewed_certificates_first_connection_revokes_the_old_one(
        pki, graceful_signer, start_gateway, tmp_path):
    _, target = graceful_signer
    running = await start_gateway(signer=target)
    client, msg = await ask(running, claim_creds(pki, tmp_path, uses=1),
                            csr_and_key(tmp_path, "dev")[0])
    doc = json.loads(msg.payload)
    await client.close()
    key = tmp_path / "dev.key"
    (tmp_path / "old.crt").write_text(doc["certificate"])
    old = PahoClient(running, Creds(tmp_path / "old.crt", key, pki.root), "old")
    await old.connect()
    await old.subscribe("cert/+", 1)
    csr, new_key = csr_and_key(tmp_path, "new")
    await old.publish("cert/renew", csr, 1)
    renewed = json.loads((await old.message()).payload)
    old_serial = int(doc["serial"], 16)
    inventory = pki.home.inventory
    assert inventory.get(old_serial).status == "valid"  # the grace is 7 days
    # The new certificate connects (beside the old session, as a device switching over).
    (tmp_path / "new.crt").write_text(renewed["certificate"])
    new = PahoClient(running, Creds(tmp_path / "new.crt", new_key, pki.root), "new")
    await new.connect()
    record = await running.logs.wait("cert_first_use", network=doc["network"])
    assert record["superseded"] == 1 and record["serial"] == renewed["serial"]
    revoked = inventory.get(old_serial)
    assert revoked.status == "revoked" and revoked.reason == "superseded"
    # The gateway loads the new CRL and closes the session still on the old certificate,
    # and refuses it from now on; the new one stays.
    await running.logs.wait("revoked", network=doc["network"], client_id="old")
    try:
        again = await MQTTTestClient.open(running, Creds(tmp_path / "old.crt", key, pki.root))
        assert await again.connect("again") is None
    except trio.BrokenResourceError:
        pass
    await running.logs.wait("refused", cause="CERT_REVOKED")
    await new.publish("report/x", b"1", 1)
    assert running.logs.find("revoked", client_id="new") == []
    assert running.gateway.metrics.provisioning.first_use.values()["superseded"] == 1
    # A second connection of the same certificate asks nothing more of the signer.
    await new.close()
    again = PahoClient(running, Creds(tmp_path / "new.crt", new_key, pki.root), "new2")
    await again.connect()
    await running.logs.wait("connected", client_id="new2")
    assert len(running.logs.find("cert_first_use")) == 1
    await again.close()
    await old.close()


async def test_first_use_is_refused_for_a_certificate_the_signer_did_not_issue(
        pki, graceful_signer):
    signer, _ = graceful_signer
    from ca.errors import SignRefusedError
    from ca.profiles import build_device, build_hierarchy
    from ca.store import utcnow

    other = build_hierarchy(name="someone else", now=utcnow())
    stranger = build_device(other.issuing.key.public_key(), issuer=other.issuing,
                            network=uuid.uuid4(), now=utcnow())
    with pytest.raises(SignRefusedError) as refused:
        signer.first_use(stranger, now=utcnow(), actor="test")
    assert refused.value.reason == "not_a_device"


async def test_a_claim_revoked_during_its_session_is_cut(pki, graceful_signer, start_gateway,
                                                          tmp_path):
    _, target = graceful_signer
    running = await start_gateway(signer=target)
    claim = claim_creds(pki, tmp_path, uses=5)
    client = PahoClient(running, claim, "line")
    await client.connect()
    await client.subscribe("provision/+", 1)
    await running.logs.wait("provision_connected", client_id="line")
    pki.home.revoke(claim.serial)
    record = await running.logs.wait("revoked", claim_serial=claim.serial)
    assert record["batch"] == "line3" and record["client_id"] == "line"
    await trio.to_thread.run_sync(lambda: client.disconnected.wait(20))
    assert client.disconnected.is_set()
    assert running.gateway.provisioning.claim_sessions == {}
    await client.close()
