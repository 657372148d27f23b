"""Chains verify with cryptography's verifier and with `openssl verify`, for every key type."""

from __future__ import annotations

import datetime as dt

import pytest
from cahelpers import openssl_verify
from cryptography import x509
from cryptography.x509 import verification as xv

from ca.errors import RevokedError, VerifyFailedError
from ca.store import CAHome
from ca.verify import load_pem_chain, verify_chain


def _now():
    return dt.datetime.now(dt.UTC)


def test_device_chain_verifies_with_cryptographys_client_verifier(ca_home, device_bundle):
    leaf, issuing = load_pem_chain(device_bundle.cert_path.read_bytes())
    assert issuing == ca_home.issuing_cert  # device.crt carries the chain
    verifier = (xv.PolicyBuilder().store(xv.Store([ca_home.root_cert])).time(_now())
                .build_client_verifier())
    verified = verifier.verify(leaf, [issuing])
    assert verified.chain == [leaf, ca_home.issuing_cert, ca_home.root_cert]
    assert verified.subjects == [
        x509.UniformResourceIdentifier(f"urn:uuid:{device_bundle.network_uuid}")]


def test_device_chain_verifies_with_openssl_for_client_purpose(ca_home, device_bundle):
    r = openssl_verify(ca_home.path, device_bundle.cert_path, extra=("-purpose", "sslclient"))
    assert r.returncode == 0, r.stderr
    r = openssl_verify(ca_home.path, device_bundle.cert_path, extra=("-purpose", "sslserver"))
    assert r.returncode != 0  # a device certificate cannot serve TLS


def test_server_chain_verifies_for_its_names_and_not_for_others(ca_home):
    crt = ca_home.path / "server" / "server.crt"
    leaf, issuing = load_pem_chain(crt.read_bytes())
    base = xv.PolicyBuilder().store(xv.Store([ca_home.root_cert])).time(_now())
    base.build_server_verifier(xv.DNSName("localhost")).verify(leaf, [issuing])
    with pytest.raises(xv.VerificationError):
        base.build_server_verifier(xv.DNSName("example.com")).verify(leaf, [issuing])
    assert openssl_verify(ca_home.path, crt, extra=("-verify_hostname", "localhost")
                          ).returncode == 0


def test_operator_chain_verifies_and_names_the_operator(ca_home):
    crt = ca_home.path / "operator" / "operator.crt"
    leaf, issuing = load_pem_chain(crt.read_bytes())
    verified = (xv.PolicyBuilder().store(xv.Store([ca_home.root_cert])).time(_now())
                .build_client_verifier().verify(leaf, [issuing]))
    assert verified.subjects == [
        x509.UniformResourceIdentifier("urn:fleetgate:operator:test-operator")]
    assert (ca_home.path / "operator" / "ca.crt").read_bytes() == ca_home.root_pem


def test_verify_chain_reports_the_full_chain_and_refuses_a_foreign_ca(ca_home, make_odd_device,
                                                                     device_bundle):
    result = verify_chain(load_pem_chain(device_bundle.cert_path.read_bytes()),
                          root=ca_home.root_cert, issuing=ca_home.issuing_cert,
                          crl=ca_home.load_crl(), now=_now())
    assert result.serial == device_bundle.serial
    assert result.chain[0] == f"CN={device_bundle.network_uuid}"
    assert result.chain[-1] == ca_home.root_cert.subject.rfc4514_string()
    foreign = make_odd_device("foreign-ca")
    with pytest.raises(VerifyFailedError):
        verify_chain(load_pem_chain(foreign.cert_path.read_bytes()), root=ca_home.root_cert,
                     issuing=ca_home.issuing_cert, crl=None, now=_now())


@pytest.mark.parametrize("key_type", ["rsa-3072", "ed25519"])
def test_other_key_types_make_chains_openssl_and_our_verify_accept(tmp_path, key_type):
    home = CAHome.init(tmp_path / "home", key_type=key_type, passphrase=b"pass phrase")
    bundles = home.issue_devices(tmp_path / "b", count=3)
    server = home.issue_server(tmp_path / "s", dns=["localhost"])
    r = openssl_verify(home.path, *(b.cert_path for b in bundles), server.cert_path)
    assert r.returncode == 0, r.stderr
    verify_chain(load_pem_chain(bundles[0].cert_path.read_bytes()), root=home.root_cert,
                 issuing=home.issuing_cert, crl=home.load_crl(), now=_now())
    home.revoke(bundles[0].network_uuid)
    with pytest.raises(RevokedError):
        verify_chain(load_pem_chain(bundles[0].cert_path.read_bytes()), root=home.root_cert,
                     issuing=home.issuing_cert, crl=home.load_crl(), now=_now())
    home.close()


def test_ed25519_verify_refuses_a_leaf_signed_by_another_ed25519_ca(tmp_path):
    a = CAHome.init(tmp_path / "a", key_type="ed25519", passphrase=None)
    b = CAHome.init(tmp_path / "b", key_type="ed25519", passphrase=None)
    bundle = b.issue_devices(tmp_path / "out")[0]
    with pytest.raises(VerifyFailedError):
        verify_chain(load_pem_chain(bundle.cert_path.read_bytes()), root=a.root_cert,
                     issuing=a.issuing_cert, crl=None, now=_now())
    with pytest.raises(VerifyFailedError, match="not valid now"):
        verify_chain(load_pem_chain(bundle.cert_path.read_bytes()), root=b.root_cert,
                     issuing=b.issuing_cert, crl=None, now=_now() + dt.timedelta(days=400))
