"""The shared PKI fixtures other packages' tests rely on give what they promise."""

import datetime as dt
import stat
import subprocess

import pytest
from cryptography import x509

from ca.verify import load_pem_chain, verify_chain


def _openssl_verify(home, cert_path):
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(home.path / "root.crt"),
         "-untrusted", str(home.path / "issuing.crt"), str(cert_path)],
        capture_output=True, text=True,
    )


def test_ca_home_has_a_server_certificate_for_localhost_that_openssl_accepts(ca_home):
    cert_path = ca_home.path / "server" / "server.crt"
    r = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca_home.path / "root.crt"),
         "-untrusted", str(cert_path), "-verify_hostname", "localhost",
         "-verify_ip", "127.0.0.1", "-purpose", "sslserver", str(cert_path)],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE((ca_home.path / "server" / "server.key").stat().st_mode) == 0o600


def test_device_bundle_fixture_is_a_fresh_verifiable_device(device_bundle, make_device, ca_home):
    assert _openssl_verify(ca_home, device_bundle.cert_path).returncode == 0
    assert make_device().network_uuid != device_bundle.network_uuid


@pytest.mark.parametrize("kind", ["expired", "not-yet-valid", "self-signed", "foreign-ca"])
def test_odd_devices_are_refused_by_openssl_and_by_our_verifier(kind, make_odd_device, ca_home):
    bundle = make_odd_device(kind)
    assert _openssl_verify(ca_home, bundle.cert_path).returncode != 0
    with pytest.raises(Exception, match="does not verify"):
        verify_chain(load_pem_chain(bundle.cert_path.read_bytes()), root=ca_home.root_cert,
                     issuing=ca_home.issuing_cert, crl=None, now=dt.datetime.now(dt.UTC))
    cert = x509.load_pem_x509_certificate(bundle.cert_path.read_bytes())
    assert cert.subject.rfc4514_string() == f"CN={bundle.network_uuid}"


def test_certs_example_is_public_only_and_consistent():
    import json
    from pathlib import Path

    from cryptography.hazmat.primitives import hashes
    from cryptography.x509 import verification as xv

    folder = Path(__file__).resolve().parents[3] / "certs.example"
    for p in folder.iterdir():
        assert b"PRIVATE KEY" not in p.read_bytes(), p
        assert p.suffix not in (".key", ".p12"), p
    root = x509.load_pem_x509_certificate((folder / "root.crt").read_bytes())
    leaf, issuing = load_pem_chain((folder / "device.crt").read_bytes())
    at = leaf.not_valid_before_utc + dt.timedelta(hours=1)  # valid then, forever
    verified = (xv.PolicyBuilder().store(xv.Store([root])).time(at)
                .build_client_verifier().verify(leaf, [issuing]))
    info = json.loads((folder / "device.json").read_text())
    assert verified.subjects == [x509.UniformResourceIdentifier(f"urn:uuid:{info['uuid']}")]
    assert info["serial"] == f"{leaf.serial_number:x}"
    assert info["fingerprint"] == leaf.fingerprint(hashes.SHA256()).hex()
    crl = x509.load_pem_x509_crl((folder / "crl.pem").read_bytes())
    assert crl.is_signature_valid(issuing.public_key()) and len(crl) == 0
