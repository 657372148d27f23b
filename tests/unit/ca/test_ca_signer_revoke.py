"""The online signer's `revoke` operation, without sockets: a registrar only, a device
certificate only, a reason a registrar may give; recorded with who asked, CRL rewritten."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from cryptography import x509

from ca import audit
from ca.errors import SignRefusedError
from ca.signer import EstApp, Peer, Signer
from ca.store import CAHome

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
PATH = "/.well-known/est/revoke"


@pytest.fixture
def home(tmp_path):
    h = CAHome.init(tmp_path / "home", passphrase=None, now=NOW)
    yield h
    h.close()


def revoke_events(home: CAHome) -> list[audit.AuditEntry]:
    return [e for e in audit.entries(home.inventory.connection) if e.action == "revoke"]


def test_a_network_is_revoked_with_its_reason_and_who_asked(home, tmp_path):
    [dev] = home.issue_devices(tmp_path / "d", now=NOW)
    [other] = home.issue_devices(tmp_path / "d", now=NOW)
    crl_before = home.load_crl().extensions.get_extension_for_class(x509.CRLNumber).value
    revoked = Signer(home).revoke(network=dev.network_uuid, serial=None,
                                  reason="key-compromise", now=NOW, actor="registrar:gw1",
                                  by="owner:7")
    assert revoked == [dev.serial]
    record = home.inventory.get(dev.serial)
    assert (record.status, record.reason) == ("revoked", "key-compromise")
    assert home.inventory.get(other.serial).status == "valid"
    [event] = revoke_events(home)
    assert event.actor == "registrar:gw1"
    assert event.details["by"] == "owner:7" and event.details["reason"] == "key-compromise"
    crl = home.load_crl()
    assert crl.get_revoked_certificate_by_serial_number(dev.serial) is not None
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > \
        crl_before.crl_number


def test_refusals_name_their_reason_and_change_nothing(home, tmp_path):
    [dev] = home.issue_devices(tmp_path / "d", now=NOW)
    server = home.issue_server(tmp_path / "srv", dns=["localhost"], now=NOW)
    signer = Signer(home)

    def refused(**kw) -> str:
        args = dict(network=None, serial=None, reason="key-compromise", now=NOW,
                    actor="registrar:gw1") | kw
        with pytest.raises(SignRefusedError) as info:
            signer.revoke(**args)
        return info.value.reason

    assert refused(network=dev.network_uuid, reason="ca-compromise") == "revoke_reason"
    assert refused(network=dev.network_uuid, reason="superseded") == "revoke_reason"
    assert refused() == "revoke_target"
    assert refused(network=uuid.uuid4()) == "not_found"
    assert refused(serial=server.serial) == "not_found"  # a device certificate only
    # A serial with another network's UUID: refused, so a caller that checked one network's
    # ownership cannot revoke another's by its serial.
    assert refused(serial=dev.serial, network=uuid.uuid4()) == "not_found"
    assert home.inventory.get(dev.serial).status == "valid"
    assert home.inventory.get(server.serial).status == "valid"
    assert revoke_events(home) == []
    signer.revoke(network=None, serial=dev.serial, reason="unspecified", now=NOW,
                  actor="registrar:gw1")
    assert refused(serial=dev.serial) == "already_revoked"
    assert len(revoke_events(home)) == 1


def test_over_est_only_a_registrar_may_revoke(home, tmp_path):
    [dev] = home.issue_devices(tmp_path / "d", now=NOW)
    app = EstApp(Signer(home), lambda: NOW)
    body = json.dumps({"network": str(dev.network_uuid), "reason": "key-compromise",
                       "by": "operator:1"}).encode()
    device_cert = x509.load_pem_x509_certificate(dev.cert_path.read_bytes())
    for peer, status in ((Peer(None), 401), (Peer("device", device_cert, "device:x"), 403),
                         (Peer("claim", None, "claim:line3"), 403)):
        answer = app.handle("POST", PATH, {}, body, peer)
        assert (answer.status, answer.reason) == (status, "not_registrar")
    assert home.inventory.get(dev.serial).status == "valid"
    assert app.handle("GET", PATH, {}, b"", Peer("registrar", None, "unix-socket")).status \
        == 405
    bad = app.handle("POST", PATH, {}, b"{not json", Peer("registrar", None, "unix-socket"))
    assert bad.status == 400
    answer = app.handle("POST", PATH, {}, body, Peer("registrar", None, "unix-socket"))
    assert answer.status == 200
    assert json.loads(answer.body) == {"revoked": [format(dev.serial, "x")]}
    again = app.handle("POST", PATH, {}, body, Peer("registrar", None, "unix-socket"))
    assert (again.status, again.reason) == (409, "already_revoked")
