"""Claim certificates: their profile, their use count (spent only inside the transaction
that records what it paid for), and every way a claim is refused; registrar certificates."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3

import pytest
from cahelpers import openssl
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from ca import audit, claims
from ca.cli import main
from ca.errors import BadInputError, ClaimRefusedError, ExitCode
from ca.inventory import Inventory
from ca.profiles import build_claim
from ca.store import CAHome

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv("FLEET_CA_HOME", raising=False)
    monkeypatch.delenv("FLEET_CA_PASSPHRASE", raising=False)


@pytest.fixture
def home(tmp_path):
    h = CAHome.init(tmp_path / "home", passphrase=None, now=NOW)
    yield h
    h.close()


def _cert(path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def _use(home: CAHome, cert: x509.Certificate, now=NOW, network="n1"):
    with home.inventory.transaction() as conn:
        return claims.use_claim(conn, cert, now=now, actor="signer", network=network)


def test_a_claim_has_its_own_profile_and_files(home, tmp_path):
    files = claims.issue_claim(home, tmp_path / "c", batch="line3", uses=2, days=14, now=NOW)
    cert = _cert(files.cert_path)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "urn:fleetgate:claim:line3"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=14)
    assert (files.key_path.stat().st_mode & 0o777) == 0o600
    assert json.loads((tmp_path / "c" / "claim.json").read_text())["uses"] == 2
    r = openssl("verify", "-attime", str(int(NOW.timestamp()) + 60), "-CAfile", files.ca_path,
                "-untrusted", files.cert_path, "-purpose", "sslclient", files.cert_path)
    assert r.returncode == 0, r.stdout + r.stderr
    status = claims.claim_status(home.inventory.connection, files.serial)
    assert (status.batch, status.uses_total, status.uses_left) == ("line3", 2, 2)


def test_each_use_decrements_and_is_audited_until_exhausted(home, tmp_path):
    cert = _cert(claims.issue_claim(home, tmp_path / "c", batch="b", uses=2, now=NOW).cert_path)
    assert _use(home, cert, network="net-a").uses_left == 1
    assert _use(home, cert, network="net-b").uses_left == 0
    with pytest.raises(ClaimRefusedError) as exc:
        _use(home, cert)
    assert exc.value.reason == "exhausted"
    uses = [e for e in audit.entries(home.inventory.connection) if e.action == "claim-use"]
    assert [(e.details["network"], e.details["uses_left"]) for e in uses] == [
        ("net-a", 1), ("net-b", 0)]


def test_a_use_rolled_back_with_its_transaction_is_not_spent(home, tmp_path):
    cert = _cert(claims.issue_claim(home, tmp_path / "c", batch="b", uses=1, now=NOW).cert_path)
    with pytest.raises(RuntimeError):
        with home.inventory.transaction() as conn:
            claims.use_claim(conn, cert, now=NOW, actor="signer", network="n")
            raise RuntimeError("the certificate could not be recorded")
    assert claims.claim_status(home.inventory.connection, cert.serial_number).uses_left == 1
    assert _use(home, cert).uses_left == 0


def test_a_revoked_claim_is_refused(home, tmp_path):
    files = claims.issue_claim(home, tmp_path / "c", batch="b", uses=5, now=NOW)
    home.revoke(files.serial, now=NOW)
    with pytest.raises(ClaimRefusedError) as exc:
        _use(home, _cert(files.cert_path))
    assert exc.value.reason == "revoked"
    assert files.serial in {r.serial_number for r in home.load_crl()}


def test_an_expired_claim_is_refused(home, tmp_path):
    cert = _cert(claims.issue_claim(home, tmp_path / "c", batch="b", uses=5, days=1,
                                    now=NOW).cert_path)
    with pytest.raises(ClaimRefusedError) as exc:
        _use(home, cert, now=NOW + dt.timedelta(days=2))
    assert exc.value.reason == "expired"


def test_a_foreign_or_forged_claim_is_unknown(home, tmp_path):
    other = CAHome.init(tmp_path / "other", passphrase=None, now=NOW)
    foreign = _cert(claims.issue_claim(other, tmp_path / "f", batch="b", uses=5,
                                       now=NOW).cert_path)
    with pytest.raises(ClaimRefusedError) as exc:
        _use(home, foreign)
    assert exc.value.reason == "unknown"
    # Our own device certificate is no claim either.
    bundle = home.issue_devices(tmp_path / "d", now=NOW)[0]
    with pytest.raises(ClaimRefusedError):
        _use(home, _cert(bundle.cert_path))


def test_claim_limits_are_checked(home, tmp_path):
    with pytest.raises(BadInputError, match="at most 365 days"):
        claims.issue_claim(home, tmp_path / "c", batch="b", uses=1, days=366, now=NOW)
    with pytest.raises(BadInputError, match="--uses"):
        claims.issue_claim(home, tmp_path / "c", batch="b", uses=0, now=NOW)
    with pytest.raises(BadInputError):
        build_claim(home.issuing_cert.public_key(), issuer=home.issuer, batch="a b", now=NOW)
    assert not (tmp_path / "c" / "claim.crt").exists()


def test_registrar_certificate_profile(home, tmp_path):
    files = claims.issue_registrar(home, tmp_path / "r", name="gw1", now=NOW)
    cert = _cert(files.cert_path)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "urn:fleetgate:registrar:gw1"]
    assert home.inventory.get(files.serial).kind == "registrar"


def test_cli_issue_claim_and_claims_listing(tmp_path, capsys):
    h = tmp_path / "home"
    assert main(["--home", str(h), "init", "--no-passphrase"]) == 0
    assert main(["--home", str(h), "issue", "claim", "--batch", "line3", "--uses", "500",
                 "--expires-in", "14", "--out", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    assert main(["--home", str(h), "claims", "--json"]) == 0
    [c] = json.loads(capsys.readouterr().out)
    assert (c["batch"], c["uses_left"], c["revoked"]) == ("line3", 500, False)
    code = main(["--home", str(h), "issue", "claim", "--batch", "x", "--uses", "1",
                 "--expires-in", "400", "--out", str(tmp_path / "c2")])
    assert code == ExitCode.BAD_INPUT
    assert main(["--home", str(h), "list", "--kind", "claim"]) == 0


def test_an_inventory_from_schema_1_keeps_its_certificates_and_accepts_claims(tmp_path):
    h = CAHome.init(tmp_path / "home", passphrase=None, now=NOW)
    bundle = h.issue_devices(tmp_path / "b", now=NOW)[0]
    h.close()
    db = tmp_path / "home" / "inventory.db"
    with sqlite3.connect(db) as c:  # back to what schema 1 had
        c.executescript("DROP TABLE audit; DROP TABLE claims; DROP TABLE supersede;")
        c.execute("PRAGMA user_version = 1")
    inv = Inventory.open(db)
    assert inv.schema_version == 2
    assert inv.get(bundle.serial).network_uuid == bundle.network_uuid
    inv.close()
    with CAHome.open(tmp_path / "home") as again:
        claims.issue_claim(again, tmp_path / "c", batch="b", uses=1, now=NOW)
