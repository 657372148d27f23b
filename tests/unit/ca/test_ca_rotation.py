"""Issuing-CA rotation under the same root: new certificates come from the new issuing CA,
the old one's stay valid until they expire, crl.pem holds one CRL per issuing CA (each
signed by its own issuer), and openssl accepts devices of both with -crl_check."""

from __future__ import annotations

import datetime as dt

import pytest
from cahelpers import openssl
from cryptography import x509

from ca import audit, rotation
from ca.cli import main
from ca.errors import ExitCode, HomeInvalidError, OutputError, PassphraseError
from ca.store import CAHome

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
PASS = b"issuing pass"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for v in ("FLEET_CA_HOME", "FLEET_CA_PASSPHRASE", "FLEET_CA_ROOT_PASSPHRASE"):
        monkeypatch.delenv(v, raising=False)


@pytest.fixture
def home(tmp_path):
    h = CAHome.init(tmp_path / "home", name="Acme", passphrase=PASS, now=NOW)
    yield h
    h.close()


def _leaf(bundle) -> x509.Certificate:
    return x509.load_pem_x509_certificates(bundle.cert_path.read_bytes())[0]


def _crls(home: CAHome) -> list[x509.CertificateRevocationList]:
    return home.load_crls()


def openssl_crl_check(home: CAHome, device_crt) -> tuple[int, str]:
    """openssl verify with the root as the only anchor, the bundle's own chain as untrusted
    intermediates and every CRL of crl.pem, checking the leaf's revocation."""
    at = str(int((NOW + dt.timedelta(hours=1)).timestamp()))  # the clock the CA was given
    r = openssl("verify", "-crl_check", "-attime", at, "-CAfile", home.path / "root.crt",
                "-CRLfile", home.path / "crl.pem", "-untrusted", device_crt, device_crt)
    return r.returncode, r.stdout + r.stderr


def test_rotation_puts_a_new_issuing_ca_in_charge_and_keeps_the_old_ones_devices_valid(
        home, tmp_path):
    old = home.issuing_cert
    before = home.issue_devices(tmp_path / "a", count=2, now=NOW)
    new = home.rotate_issuing(PASS, now=NOW)
    after = home.issue_devices(tmp_path / "b", count=2, now=NOW)

    assert new.subject.rfc4514_string() == "CN=Acme Issuing CA 2,O=Acme"
    new.verify_directly_issued_by(home.root_cert)
    assert [_leaf(b).issuer for b in after] == [new.subject] * 2
    assert home.previous_issuing == (old,)
    chain = x509.load_pem_x509_certificates((home.path / "ca-chain.pem").read_bytes())
    assert chain == [new, old, home.root_cert]
    crls = _crls(home)
    assert [c.issuer for c in crls] == [new.subject, old.subject]
    assert crls[0].is_signature_valid(new.public_key())
    assert crls[1].is_signature_valid(old.public_key())

    home.revoke(before[0].serial, now=NOW)
    home.revoke(after[0].serial, now=NOW)
    crls = _crls(home)
    assert {r.serial_number for r in crls[0]} == {after[0].serial}
    assert {r.serial_number for r in crls[1]} == {before[0].serial}
    for bundle, ok in ((before[0], False), (before[1], True), (after[0], False),
                       (after[1], True)):
        code, out = openssl_crl_check(home, bundle.cert_path)
        assert (code == 0) is ok, out
        if not ok:
            assert "certificate revoked" in out


def test_the_home_reopens_with_both_issuing_cas_and_cli_verify_accepts_both(home, tmp_path,
                                                                             capsys):
    a = home.issue_devices(tmp_path / "a", now=NOW)[0]
    home.rotate_issuing(PASS, now=NOW)
    b = home.issue_devices(tmp_path / "b", now=NOW)[0]
    with CAHome.open(home.path) as again:
        assert again.issuing_cert == home.issuing_cert
        assert again.previous_issuing == home.previous_issuing
    for bundle in (a, b):
        assert main(["--home", str(home.path), "verify", str(bundle.cert_path)]) == 0
    out = capsys.readouterr().out
    assert "<- CN=Acme Issuing CA,O=Acme <-" in out and "<- CN=Acme Issuing CA 2,O=Acme <-" in out


def test_rotation_is_recorded_in_the_inventory_and_the_audit_trail(home):
    old = home.issuing_cert
    new = home.rotate_issuing(PASS, now=NOW)
    assert home.inventory.get(new.serial_number).kind == "issuing"
    rot = [e for e in audit.entries(home.inventory.connection) if e.action == "rotate-issuing"]
    assert len(rot) == 1 and rot[0].subject == format(new.serial_number, "x")
    assert rot[0].details["previous"] == format(old.serial_number, "x")
    assert audit.verify(home.inventory.connection) > 0


def test_a_wrong_root_passphrase_changes_nothing(home):
    old = home.issuing_cert
    chain = (home.path / "ca-chain.pem").read_bytes()
    with pytest.raises(PassphraseError):
        home.rotate_issuing(b"not the root's", now=NOW)
    assert home.issuing_cert == old
    assert (home.path / "ca-chain.pem").read_bytes() == chain
    assert not (home.path / rotation.PREVIOUS_DIR).exists()
    assert not (home.path / rotation.NEXT_CRT).exists()


def test_rotation_needs_the_offline_root_key_back(home):
    (home.path / "root.key").rename(home.path.parent / "root.key.offline")
    with pytest.raises(HomeInvalidError, match="bring the offline root key back"):
        home.rotate_issuing(PASS, now=NOW)


def test_a_crash_after_recording_is_finished_on_open(home, monkeypatch):
    def crash(path):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(rotation, "_swap", crash)
    with pytest.raises(OutputError):
        home.rotate_issuing(PASS, now=NOW)
    monkeypatch.undo()
    pending = x509.load_pem_x509_certificate((home.path / rotation.NEXT_CRT).read_bytes())
    with CAHome.open(home.path, passphrase=PASS) as again:
        assert again.issuing_cert == pending
        assert not (again.path / rotation.NEXT_CRT).exists()
        _ = again.issuer  # the key that was renamed matches the certificate
        assert len(x509.load_pem_x509_certificates(
            (again.path / "ca-chain.pem").read_bytes())) == 3


def test_an_unrecorded_rotation_is_discarded_on_open(home, tmp_path):
    CAHome.init(tmp_path / "other", passphrase=None, now=NOW).close()
    other = tmp_path / "other"
    (home.path / rotation.NEXT_CRT).write_bytes((other / "issuing.crt").read_bytes())
    (home.path / rotation.NEXT_KEY).write_bytes(b"junk")
    old = home.issuing_cert
    with CAHome.open(home.path) as again:
        assert again.issuing_cert == old
    assert not (home.path / rotation.NEXT_CRT).exists()
    assert not (home.path / rotation.NEXT_KEY).exists()


def test_an_expired_previous_issuing_ca_is_retired_from_crl_pem(home):
    old = home.issuing_cert
    home.rotate_issuing(PASS, now=NOW + dt.timedelta(days=365))
    assert len(_crls(home)) == 2
    home.write_crl(now=old.not_valid_after_utc + dt.timedelta(days=1))
    crls = _crls(home)
    assert [c.issuer for c in crls] == [home.issuing_cert.subject]


def test_cli_rotate_issuing_reads_the_root_passphrase_of_its_own(home, tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.setenv("FLEET_CA_PASSPHRASE", PASS.decode())
    code = main(["--home", str(home.path), "rotate-issuing"])
    assert code == ExitCode.PASSPHRASE
    assert "--root-passphrase-file" in capsys.readouterr().err
    f = tmp_path / "root.pass"
    f.write_bytes(PASS + b"\n")
    assert main(["--home", str(home.path), "rotate-issuing", "--root-passphrase-file",
                 str(f)]) == 0
    assert "Acme Issuing CA 2" in capsys.readouterr().out
