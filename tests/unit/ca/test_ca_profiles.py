"""Certificate profiles: every extension the issue names, checked on the parsed certificate."""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca.errors import BadInputError
from ca.fastsign import FastDeviceSigner, pem_certificate, random_serial
from ca.keys import generate_key
from ca.profiles import (
    BACKDATE,
    Issuer,
    build_device,
    build_hierarchy,
    build_issuing,
    build_operator,
    build_root,
    build_server,
    device_validity,
    network_of,
)

NOW = dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def hierarchy():
    return build_hierarchy(name="profile test", now=NOW)


def ext(cert, cls):
    return cert.extensions.get_extension_for_class(cls)


def ku_set(cert):
    ku = ext(cert, x509.KeyUsage).value
    names = ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign"]
    return {n for n in names if getattr(ku, n)}


def test_root_is_a_self_signed_ten_year_ca_with_cert_and_crl_signing_only(hierarchy):
    root = hierarchy.root.cert
    assert root.subject == root.issuer
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        "profile test Root CA"
    bc = ext(root, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length is None
    ku = ext(root, x509.KeyUsage)
    assert ku.critical and ku_set(root) == {"key_cert_sign", "crl_sign"}
    assert ext(root, x509.SubjectKeyIdentifier).value == \
        x509.SubjectKeyIdentifier.from_public_key(root.public_key())
    assert root.not_valid_after_utc - root.not_valid_before_utc == \
        dt.timedelta(days=3650) + BACKDATE
    root.verify_directly_issued_by(root)


def test_issuing_ca_has_path_length_zero_five_years_and_the_roots_key_id(hierarchy):
    root, issuing = hierarchy.root.cert, hierarchy.issuing.cert
    issuing.verify_directly_issued_by(root)
    bc = ext(issuing, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ext(issuing, x509.KeyUsage)
    assert ku.critical and {"key_cert_sign", "crl_sign"} <= ku_set(issuing)
    assert ext(issuing, x509.AuthorityKeyIdentifier).value.key_identifier == \
        ext(root, x509.SubjectKeyIdentifier).value.digest
    assert issuing.not_valid_after_utc - NOW == dt.timedelta(days=1825)


def check_device_profile(cert, network, issuer):
    assert cert.subject.rfc4514_string() == f"CN={network}"
    san = ext(cert, x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier(f"urn:uuid:{network}")]
    eku = ext(cert, x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical and ku_set(cert) == {"digital_signature"}
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    assert ext(cert, x509.SubjectKeyIdentifier).value == \
        x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == \
        ext(issuer.cert, x509.SubjectKeyIdentifier).value.digest
    assert cert.issuer == issuer.cert.subject
    assert 64 <= cert.serial_number.bit_length() <= 159
    cert.verify_directly_issued_by(issuer.cert)
    assert network_of(cert) == network


def test_device_certificate_names_one_network_uuid_for_client_auth_only(hierarchy):
    network = uuid.uuid4()
    key = generate_key()
    cert = build_device(key.public_key(), issuer=hierarchy.issuing, network=network, now=NOW)
    check_device_profile(cert, network, hierarchy.issuing)
    assert cert.not_valid_before_utc == NOW - BACKDATE
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=365)


def test_fast_signer_produces_the_builders_certificate_byte_for_byte(hierarchy):
    nb, na = device_validity(hierarchy.issuing, NOW, 90)
    signer = FastDeviceSigner(hierarchy.issuing, nb, na)
    for _ in range(20):
        key, network, serial = generate_key(), uuid.uuid4(), random_serial()
        der = signer.sign(key.public_key(), network, serial)
        cert = x509.load_der_x509_certificate(der)
        check_device_profile(cert, network, hierarchy.issuing)
        reference = build_device(key.public_key(), issuer=hierarchy.issuing, network=network,
                                 now=NOW, days=90, serial=serial)
        assert cert.tbs_certificate_bytes == reference.tbs_certificate_bytes
        assert pem_certificate(der) == cert.public_bytes(Encoding.PEM)
        assert cert.serial_number == serial and serial.bit_length() == 159


@pytest.mark.parametrize("key_type", ["rsa-3072", "ed25519"])
def test_fast_signer_works_for_rsa_and_ed25519_issuers(key_type):
    h = build_hierarchy(name="kt", now=NOW, key_type=key_type)
    nb, na = device_validity(h.issuing, NOW)
    key, network = generate_key(), uuid.uuid4()
    cert = x509.load_der_x509_certificate(
        FastDeviceSigner(h.issuing, nb, na).sign(key.public_key(), network)
    )
    check_device_profile(cert, network, h.issuing)


def test_server_certificate_has_dns_and_ip_names_for_server_auth(hierarchy):
    key = generate_key()
    cert = build_server(key.public_key(), issuer=hierarchy.issuing, dns=["localhost", "GW.Example"],
                        ips=["127.0.0.1", "::1"], now=NOW)
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "gw.example"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert ext(cert, x509.BasicConstraints).value.ca is False
    assert ku_set(cert) == {"digital_signature"}


def test_operator_certificate_names_the_operator_urn_for_client_auth(hierarchy):
    cert = build_operator(generate_key().public_key(), issuer=hierarchy.issuing, name="alice",
                          now=NOW)
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "urn:fleetgate:operator:alice"]
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert network_of(cert) is None


def test_leaf_never_outlives_its_issuing_ca(hierarchy):
    cert = build_device(generate_key().public_key(), issuer=hierarchy.issuing,
                        network=uuid.uuid4(), now=NOW, days=36500)
    assert cert.not_valid_after_utc == hierarchy.issuing.cert.not_valid_after_utc


@pytest.mark.parametrize("bad", [
    {"dns": ["bad name"]}, {"dns": ["-x.example"]}, {"ips": ["300.1.1.1"]}, {},
])
def test_server_names_are_checked(hierarchy, bad):
    with pytest.raises(BadInputError):
        build_server(generate_key().public_key(), issuer=hierarchy.issuing, now=NOW, **bad)


@pytest.mark.parametrize("name", ["", "a b", "../x", "-lead", "x" * 65, "é"])
def test_operator_names_outside_the_urn_alphabet_are_refused(hierarchy, name):
    with pytest.raises(BadInputError):
        build_operator(generate_key().public_key(), issuer=hierarchy.issuing, name=name, now=NOW)


def test_naive_datetimes_are_refused(hierarchy):
    with pytest.raises(ValueError, match="timezone"):
        build_device(generate_key().public_key(), issuer=hierarchy.issuing,
                     network=uuid.uuid4(), now=dt.datetime(2026, 1, 1))


# -- Hypothesis: names and day counts ------------------------------------------------------

_ISSUER = None


def _issuer():
    global _ISSUER
    if _ISSUER is None:
        _ISSUER = build_hierarchy(name="hypothesis", now=NOW).issuing
    return _ISSUER


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(days=st.integers(min_value=-10, max_value=40000))
def test_any_day_count_gives_that_validity_or_a_clear_refusal(days):
    issuer = _issuer()
    key = ec.generate_private_key(ec.SECP256R1())
    if not 1 <= days <= 36500:
        with pytest.raises(BadInputError, match="days"):
            build_device(key.public_key(), issuer=issuer, network=uuid.uuid4(), now=NOW, days=days)
        return
    cert = build_device(key.public_key(), issuer=issuer, network=uuid.uuid4(), now=NOW, days=days)
    expected = min(NOW + dt.timedelta(days=days), issuer.cert.not_valid_after_utc)
    assert cert.not_valid_after_utc == expected
    assert cert.not_valid_before_utc < cert.not_valid_after_utc


@settings(max_examples=60, deadline=None)
@given(name=st.one_of(st.text(max_size=60),
                      st.text(st.characters(min_codepoint=0x10000), min_size=20, max_size=30)))
def test_any_ca_name_gives_a_ca_named_so_or_a_clear_refusal(name):
    key = ec.generate_private_key(ec.SECP256R1())
    size = len(name.encode("utf-8", "replace"))  # how cryptography counts name limits
    ok = 1 <= size <= 50 and name == name.strip() and name.isprintable()
    if not ok:
        with pytest.raises(BadInputError, match="CA name"):
            build_root(key, name=name, now=NOW)
        return
    root = build_root(key, name=name, now=NOW)
    assert root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == name
    issuing = build_issuing(key.public_key(), root=Issuer.of(root, key), name=name, now=NOW)
    assert issuing.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        f"{name} Issuing CA"


@settings(max_examples=40, deadline=None)
@given(name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True))
def test_any_operator_name_in_the_alphabet_round_trips_through_the_urn(name):
    cert = build_operator(ec.generate_private_key(ec.SECP256R1()).public_key(),
                          issuer=_issuer(), name=name, now=NOW)
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"urn:fleetgate:operator:{name}"]
