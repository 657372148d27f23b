"""The online signer's policy, without sockets: what it signs (the device profile only, for
a claim with uses left or a current device), what it refuses and why, its rate limits, the
superseding of renewed certificates, and that a refusal records and spends nothing."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca import audit, claims
from ca.errors import SignRefusedError
from ca.profiles import build_self_signed_device, network_of
from ca.signer import Signer, SignerLimits
from ca.store import CAHome

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def csr(key=None, *, ca: bool = False, eku=None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev")]))
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return b.sign(key, hashes.SHA256()).public_bytes(Encoding.DER)


@pytest.fixture
def home(tmp_path):
    h = CAHome.init(tmp_path / "home", passphrase=None, now=NOW)
    yield h
    h.close()


@pytest.fixture
def claim(home, tmp_path):
    files = claims.issue_claim(home, tmp_path / "claim", batch="line3", uses=3, now=NOW)
    return x509.load_pem_x509_certificates(files.cert_path.read_bytes())[0]


def _left(home, claim) -> int:
    return claims.claim_status(home.inventory.connection, claim.serial_number).uses_left


def test_enroll_signs_the_device_profile_with_a_new_network_for_the_csr_key(home, claim):
    signer = Signer(home)
    key = ec.generate_private_key(ec.SECP256R1())
    a = signer.enroll(csr(key), claim=claim, now=NOW, actor="claim:line3")
    b = signer.enroll(csr(), claim=claim, now=NOW, actor="claim:line3")
    assert a.network != b.network and network_of(a.cert) == a.network
    assert a.cert.public_key() == key.public_key()
    a.cert.verify_directly_issued_by(home.issuing_cert)
    eku = a.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert _left(home, claim) == 1
    assert home.inventory.get(a.cert.serial_number).network_uuid == a.network
    acts = [e.action for e in audit.entries(home.inventory.connection)]
    assert acts[-4:] == ["claim-use", "enroll", "claim-use", "enroll"]


@pytest.mark.parametrize("make,reason", [
    (lambda: csr(rsa.generate_private_key(65537, 1024)), "csr_bad"),
    (lambda: b"not a csr", "csr_bad"),
    (lambda: csr(ca=True), "csr_profile"),
    (lambda: csr(eku=[ExtendedKeyUsageOID.SERVER_AUTH]), "csr_profile"),
])
def test_bad_csrs_are_refused_with_a_reason_and_spend_nothing(home, claim, make, reason):
    before = home.inventory.count()
    with pytest.raises(SignRefusedError) as exc:
        Signer(home).enroll(make(), claim=claim, now=NOW, actor="x")
    assert exc.value.reason == reason and exc.value.status == 400
    assert home.inventory.count() == before and _left(home, claim) == 3


def test_a_forged_csr_is_refused_for_want_of_proof_of_possession(home, claim):
    good = bytearray(csr())
    good[-5] ^= 0x01  # inside the signature
    with pytest.raises(SignRefusedError) as exc:
        Signer(home).enroll(bytes(good), claim=claim, now=NOW, actor="x")
    assert exc.value.reason in ("csr_forged", "csr_bad")


def test_an_exhausted_revoked_or_expired_claim_signs_nothing(home, claim, tmp_path):
    signer = Signer(home)
    for _ in range(3):
        signer.enroll(csr(), claim=claim, now=NOW, actor="x")
    before = home.inventory.count()
    with pytest.raises(SignRefusedError) as exc:
        signer.enroll(csr(), claim=claim, now=NOW, actor="x")
    assert (exc.value.reason, exc.value.status) == ("claim_exhausted", 403)
    other = x509.load_pem_x509_certificates(claims.issue_claim(
        home, tmp_path / "c2", batch="b2", uses=9, days=1, now=NOW).cert_path.read_bytes())[0]
    with pytest.raises(SignRefusedError, match="expired") as exc:
        signer.enroll(csr(), claim=other, now=NOW + dt.timedelta(days=2), actor="x")
    home.revoke(other.serial_number, now=NOW)
    with pytest.raises(SignRefusedError) as exc:
        signer.enroll(csr(), claim=other, now=NOW, actor="x")
    assert exc.value.reason == "claim_revoked"
    assert home.inventory.count() == before + 1  # only the second claim itself


def test_a_claim_is_rate_limited_and_refills_with_the_clock(home, tmp_path):
    c = x509.load_pem_x509_certificates(claims.issue_claim(
        home, tmp_path / "c", batch="b", uses=100, now=NOW).cert_path.read_bytes())[0]
    signer = Signer(home, SignerLimits(claim_burst=2, claim_per_minute=6))
    signer.enroll(csr(), claim=c, now=NOW, actor="x")
    signer.enroll(csr(), claim=c, now=NOW, actor="x")
    with pytest.raises(SignRefusedError) as exc:
        signer.enroll(csr(), claim=c, now=NOW, actor="x")
    assert (exc.value.reason, exc.value.status, exc.value.retry_after) == ("rate_claim", 503, 10)
    signer.enroll(csr(), claim=c, now=NOW + dt.timedelta(seconds=10), actor="x")
    assert signer.statistics()["counters"]["refused_rate_claim"] == 1


def test_renewal_keeps_the_network_and_supersedes_the_old_certificate_after_the_grace(
        home, claim):
    signer = Signer(home, SignerLimits(supersede_grace=dt.timedelta(hours=1)))
    first = signer.enroll(csr(), claim=claim, now=NOW, actor="x")
    renewed = signer.reenroll(csr(), device=first.cert, now=NOW, actor="d")
    assert renewed.network == first.network
    assert renewed.cert.serial_number != first.cert.serial_number
    assert signer.sweep(NOW + dt.timedelta(minutes=59)) == 0
    assert home.inventory.get(first.cert.serial_number).status == "valid"
    assert signer.sweep(NOW + dt.timedelta(hours=1)) == 1
    old = home.inventory.get(first.cert.serial_number)
    assert (old.status, old.reason) == ("revoked", "superseded")
    assert first.cert.serial_number in {r.serial_number for r in home.load_crl()}
    # The superseded certificate renews no more.
    with pytest.raises(SignRefusedError) as exc:
        signer.reenroll(csr(), device=first.cert, now=NOW + dt.timedelta(hours=2), actor="d")
    assert exc.value.reason == "device_revoked"


def test_renewal_on_request_supersedes_at_once(home, claim):
    signer = Signer(home)
    first = signer.enroll(csr(), claim=claim, now=NOW, actor="x")
    signer.reenroll(csr(), device=first.cert, now=NOW, actor="d", supersede_now=True)
    assert home.inventory.get(first.cert.serial_number).reason == "superseded"


def test_renewal_refuses_what_is_not_a_current_device_of_this_ca(home, claim):
    signer = Signer(home)
    forged = build_self_signed_device(ec.generate_private_key(ec.SECP256R1()),
                                      network=signer.enroll(csr(), claim=claim, now=NOW,
                                                            actor="x").network, now=NOW)
    for cert in (forged, claim):
        with pytest.raises(SignRefusedError) as exc:
            signer.reenroll(csr(), device=cert, now=NOW, actor="d")
        assert exc.value.reason == "not_a_device"
    dev = signer.enroll(csr(), claim=claim, now=NOW, actor="x")
    with pytest.raises(SignRefusedError) as exc:
        signer.reenroll(csr(), device=dev.cert, now=dev.cert.not_valid_after_utc
                        + dt.timedelta(seconds=1), actor="d")
    assert exc.value.reason == "device_expired"


def test_renewals_are_rate_limited_per_network(home, claim):
    signer = Signer(home, SignerLimits(network_burst=1, network_per_hour=1))
    dev = signer.enroll(csr(), claim=claim, now=NOW, actor="x")
    signer.reenroll(csr(), device=dev.cert, now=NOW, actor="d")
    with pytest.raises(SignRefusedError) as exc:
        signer.reenroll(csr(), device=dev.cert, now=NOW, actor="d")
    assert exc.value.reason == "rate_network" and exc.value.retry_after == 3600


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048))
def test_any_bytes_as_a_csr_are_refused_or_signed_never_a_crash(home, claim, data):
    try:
        Signer(home).enroll(data, claim=claim, now=NOW, actor="x")
    except SignRefusedError as exc:
        assert exc.reason.startswith("csr_")
    assert _left(home, claim) == 3
