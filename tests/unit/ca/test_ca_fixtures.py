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
