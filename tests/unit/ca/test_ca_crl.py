"""The CRL lists exactly the revoked serials, with reasons, and is rewritten atomically."""

from __future__ import annotations

import datetime as dt

import pytest
from cahelpers import openssl, openssl_crl_serials
from cryptography import x509

from ca.crl import REASONS, revoked_serials
from ca.errors import AlreadyRevokedError, BadInputError, NotFoundError
from ca.store import CAHome


@pytest.fixture
def home(tmp_path):
    h = CAHome.init(tmp_path / "home", name="crl test", passphrase=None)
    yield h
    h.close()


def test_a_fresh_ca_publishes_an_empty_crl_signed_by_the_issuing_ca(home):
    crl = home.load_crl()
    assert list(crl) == []
    assert crl.issuer == home.issuing_cert.subject
    assert crl.is_signature_valid(home.issuing_cert.public_key())
    r = openssl("crl", "-in", home.path / "crl.pem", "-CAfile", home.path / "ca-chain.pem",
                "-noout")
    assert r.returncode == 0 and "verify OK" in r.stderr + r.stdout


def test_crl_lists_exactly_the_revoked_serials(home, tmp_path):
    bundles = home.issue_devices(tmp_path / "b", count=10)
    revoked = {bundles[i].serial for i in (1, 4, 7)}
    for i in (1, 4, 7):
        home.revoke(bundles[i].serial, reason="key-compromise")
    crl = home.load_crl()
    assert revoked_serials(crl) == revoked
    assert openssl_crl_serials(home.path / "crl.pem") == revoked
    for entry in crl:
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        assert reason == x509.ReasonFlags.key_compromise


def test_each_rewrite_increments_the_crl_number_and_keeps_entries(home, tmp_path):
    b = home.issue_devices(tmp_path / "b", count=1)[0]
    n0 = home.load_crl().extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    home.revoke(b.network_uuid, reason="superseded")
    home.write_crl()
    crl = home.load_crl()
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == n0 + 2
    assert revoked_serials(crl) == {b.serial}
    assert crl.next_update_utc - crl.last_update_utc == dt.timedelta(days=30)


@pytest.mark.parametrize("reason", sorted(REASONS))
def test_every_reason_is_recorded_in_the_crl_and_inventory(home, tmp_path, reason):
    b = home.issue_devices(tmp_path / "b", count=1)[0]
    [record] = home.revoke(str(b.network_uuid), reason=reason)
    assert (record.status, record.reason) == ("revoked", reason)
    entry = home.load_crl().get_revoked_certificate_by_serial_number(b.serial)
    assert entry is not None
    if reason == "unspecified":  # RFC 5280 5.3.1: omitted rather than unspecified
        with pytest.raises(x509.ExtensionNotFound):
            entry.extensions.get_extension_for_class(x509.CRLReason)
    else:
        assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == \
            REASONS[reason]


def test_revoking_twice_unknown_or_a_ca_is_refused_without_touching_the_crl(home, tmp_path):
    b = home.issue_devices(tmp_path / "b", count=1)[0]
    home.revoke(b.serial)
    before = (home.path / "crl.pem").read_bytes()
    with pytest.raises(AlreadyRevokedError):
        home.revoke(b.serial)
    with pytest.raises(AlreadyRevokedError):
        home.revoke(b.network_uuid)
    with pytest.raises(NotFoundError):
        home.revoke(12345)
    with pytest.raises(BadInputError, match="CA certificates"):
        home.revoke(home.issuing_cert.serial_number)
    with pytest.raises(BadInputError, match="reason"):
        home.revoke(b.serial, reason="bored")
    assert (home.path / "crl.pem").read_bytes() == before


def test_revoking_a_network_revokes_all_its_valid_certificates(home, tmp_path):
    b = home.issue_devices(tmp_path / "b", count=1)[0]
    renewed = home.renew(b.network_uuid, out_dir=tmp_path / "renewed")
    records = home.revoke(b.network_uuid, reason="cessation-of-operation")
    assert {r.serial for r in records} == {b.serial, renewed.serial}
    assert revoked_serials(home.load_crl()) == {b.serial, renewed.serial}


def test_crl_write_leaves_no_temp_files_behind(home, tmp_path):
    b = home.issue_devices(tmp_path / "b", count=3)
    for x in b:
        home.revoke(x.serial)
    assert sorted(p.name for p in home.path.iterdir() if p.name.startswith(".")) == []
