"""Signing CSRs: proof of possession checked, requested subject and extensions ignored."""

from __future__ import annotations

import uuid

import pytest
from cahelpers import openssl_verify
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca.csr import load_csr
from ca.errors import BadCSRError, ForgedCSRError

EC_KEY = ec.generate_private_key(ec.SECP256R1())


SHA256 = hashes.SHA256()


def make_csr(key=EC_KEY, name=None, extensions=(), algo=SHA256) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")])
    )
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(key, algo).public_bytes(Encoding.PEM)


def forged_csr() -> bytes:
    """A CSR signed by one key that carries another key: no proof of possession."""
    other = ec.generate_private_key(ec.SECP256R1())
    csr = x509.load_pem_x509_csr(make_csr())
    der = csr.public_bytes(Encoding.DER)
    mine = EC_KEY.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    theirs = other.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert der.count(mine) == 1
    return der.replace(mine, theirs)


def test_signed_csr_gets_the_device_profile_and_keeps_its_key(ca_home, tmp_path):
    csr = make_csr(
        name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "evil"),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "root CA please")]),
        extensions=[x509.BasicConstraints(ca=True, path_length=None),
                    x509.SubjectAlternativeName([x509.DNSName("gateway.example")])],
    )
    out = tmp_path / "device.crt"
    signed = ca_home.sign_csr(csr, out=out)
    cert = signed.cert
    assert cert.public_key() == EC_KEY.public_key()
    assert cert.subject.rfc4514_string() == f"CN={signed.network_uuid}"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier(signed.network_uuid.urn)]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    assert out.read_bytes() == signed.chain_pem
    assert openssl_verify(ca_home.path, out).returncode == 0
    assert ca_home.find(signed.serial)[0].network_uuid == signed.network_uuid


def test_csr_can_be_signed_for_a_given_network_and_in_der(ca_home):
    net = uuid.uuid4()
    der = x509.load_pem_x509_csr(make_csr()).public_bytes(Encoding.DER)
    signed = ca_home.sign_csr(der, network=net)
    assert signed.network_uuid == net and signed.cert.subject.rfc4514_string() == f"CN={net}"


@pytest.mark.parametrize("key", [
    rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ed25519.Ed25519PrivateKey.generate(),
    ec.generate_private_key(ec.SECP384R1()),
], ids=["rsa-2048", "ed25519", "ec-p384"])
def test_csrs_with_other_accepted_keys_are_signed(ca_home, key):
    algo = None if isinstance(key, ed25519.Ed25519PrivateKey) else SHA256
    signed = ca_home.sign_csr(make_csr(key=key, algo=algo))
    assert signed.cert.public_key() == key.public_key()


def test_a_csr_whose_signature_does_not_match_its_key_is_refused_as_forged(ca_home):
    n = ca_home.inventory.count()
    with pytest.raises(ForgedCSRError, match="proof of possession"):
        ca_home.sign_csr(forged_csr())
    assert ca_home.inventory.count() == n


@pytest.mark.parametrize("data", [
    b"",
    b"garbage",
    b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    x509.load_pem_x509_csr(make_csr()).public_bytes(Encoding.DER)[:-10],
    b"\x30" * 70000,
], ids=["empty", "garbage", "bad-pem", "truncated-der", "too-large"])
def test_malformed_csrs_are_refused(data):
    with pytest.raises(BadCSRError):
        load_csr(data)


def test_weak_keys_are_refused():
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(BadCSRError, match="too small"):
        load_csr(make_csr(key=weak))
    k1 = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(BadCSRError, match="curve"):
        load_csr(make_csr(key=k1))


_names = st.lists(
    st.tuples(
        st.sampled_from([NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME,
                         NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.LOCALITY_NAME]),
        # cryptography limits these to 64 bytes of UTF-8
        st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=64)
        .filter(lambda t: len(t.encode()) <= 64),
    ),
    min_size=0, max_size=4,
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(attrs=_names, dns=st.lists(st.from_regex(r"[a-z]{1,10}\.example", fullmatch=True),
                                   max_size=3))
def test_whatever_subject_a_csr_asks_for_the_certificate_names_only_a_uuid(ca_home, attrs, dns):
    name = x509.Name([x509.NameAttribute(oid, value) for oid, value in attrs])
    exts = [x509.SubjectAlternativeName([x509.DNSName(d) for d in dns])] if dns else []
    signed = ca_home.sign_csr(make_csr(name=name, extensions=exts))
    cert = signed.cert
    assert cert.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                         str(signed.network_uuid))])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier(signed.network_uuid.urn)]
