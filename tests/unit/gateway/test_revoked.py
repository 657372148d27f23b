"""The gateway's revoked set: which CRLs count (gateway/revoked.py) and how TLSContexts keeps
it apart from the TLS context (gateway/tls.py). CAs from our own `ca` package."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from ca import CAHome, Hierarchy, Issuer, build_hierarchy
from ca.crl import RevokedEntry, build_crl
from ca.keys import generate_key
from ca.profiles import build_issuing
from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.revoked import CRLSigners, load_signers, verify_crls
from gateway.tls import TLSContexts

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)

def pem(obj) -> bytes:
    return obj.public_bytes(Encoding.PEM)

def crl(issuer: Issuer, *serials: int, now: dt.datetime = NOW, days: int = 30,
        number: int = 1) -> bytes:
    entries = [RevokedEntry(s, now) for s in serials]
    return pem(build_crl(issuer, entries, now=now, number=number, days=days))

@pytest.fixture(scope="module")
def ours() -> Hierarchy:
    return build_hierarchy(name="fleet", now=NOW)

@pytest.fixture(scope="module")
def signers(ours) -> CRLSigners:
    found, ignored = load_signers(pem(ours.root.cert), [("issuing.crt", pem(ours.issuing.cert))])
    assert found is not None and ignored == ()
    return found

# -- which CRLs count -----------------------------------------------------------------------

def test_our_issuing_cas_crl_counts_with_its_serials_and_next_update(ours, signers):
    revoked, ignored = verify_crls(crl(ours.issuing, 11, 12), signers)
    assert ignored == ()
    assert revoked is not None
    assert revoked.serials == {11, 12} and 11 in revoked and 13 not in revoked
    assert (revoked.crls, revoked.next_update) == (1, NOW + dt.timedelta(days=30))
    # What OpenSSL gets is exactly the verified CRL.
    assert x509.load_pem_x509_crl(revoked.pem).issuer == ours.issuing.cert.subject

def test_a_crl_signed_by_the_root_itself_counts(ours, signers):
    revoked, ignored = verify_crls(crl(ours.root, 5), signers)
    assert revoked is not None and 5 in revoked and ignored == ()

@pytest.mark.parametrize("name", ["fleet", "someone else"])
def test_a_foreign_cas_crl_counts_for_nothing_even_under_our_cas_name(ours, signers, name):
    foreign = build_hierarchy(name=name, now=NOW)
    data = crl(ours.issuing, 1) + crl(foreign.issuing, 2, 3)
    revoked, ignored = verify_crls(data, signers)
    assert revoked is not None and revoked.serials == {1} and revoked.crls == 1
    [why] = ignored
    assert (why.position, why.issuer) == (2, foreign.issuing.cert.subject.rfc4514_string())
    if name == "fleet":  # the same name: only the signature tells them apart
        assert foreign.issuing.cert.subject == ours.issuing.cert.subject
        assert "signature does not verify" in why.reason
    else:
        assert "not a CA the gateway trusts" in why.reason

def test_a_tampered_crl_does_not_verify(ours, signers):
    genuine = build_crl(ours.issuing, [RevokedEntry(7, NOW)], now=NOW, number=1)
    tbs = genuine.tbs_certlist_bytes
    assert tbs.count(b"\x02\x01\x07") == 1  # the entry's serial, INTEGER 7
    forged_tbs = tbs.replace(b"\x02\x01\x07", b"\x02\x01\x09")  # now it lists 9
    forged = x509.load_der_x509_crl(genuine.public_bytes(Encoding.DER).replace(tbs, forged_tbs))
    assert [e.serial_number for e in forged] == [9]
    revoked, ignored = verify_crls(pem(forged), signers)
    assert revoked is None and "signature does not verify" in ignored[0].reason

def test_a_file_without_a_verified_crl_gives_no_set(ours, signers):
    foreign = build_hierarchy(name="x", now=NOW)
    for data in (b"", b"-----BEGIN X509 CRL-----\ngarbage\n", crl(foreign.issuing, 1)):
        revoked, _ = verify_crls(data, signers)
        assert revoked is None
    revoked, ignored = verify_crls(b"-----BEGIN X509 CRL-----\ngarbage\n" +
                                   crl(ours.issuing, 4), signers)
    assert revoked is not None and revoked.serials == {4}
    assert ignored[0].position == 1 and ignored[0].reason.startswith("not a CRL")

def test_an_issuing_ca_without_crl_sign_signs_no_crl(ours):
    key = generate_key()
    cert = build_issuing(key.public_key(), root=ours.root, name="no-crl", now=NOW)
    # Re-sign the same CA without cRLSign (the profile grants it; this one must not).
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=True, crl_sign=False, encipher_only=False,
                          decipher_only=False)
    builder = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
               .public_key(key.public_key()).serial_number(cert.serial_number)
               .not_valid_before(cert.not_valid_before_utc)
               .not_valid_after(cert.not_valid_after_utc)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(usage, critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False))

    limited = Issuer.of(builder.sign(ours.root.key, hashes.SHA256()), key)
    found, _ = load_signers(pem(ours.root.cert), [("issuing.crt", pem(limited.cert))])
    assert found is not None and limited.cert in found.issuing
    revoked, ignored = verify_crls(crl(limited, 1), found)
    assert revoked is None and "cRLSign" in ignored[0].reason

# -- which CAs sign CRLs ----------------------------------------------------------------------

def test_only_issuing_cas_certified_by_a_root_in_root_crt_are_trusted(ours):
    foreign = build_hierarchy(name="fleet", now=NOW)
    server_chain = pem(ours.issuing.cert)  # a server.crt holds leaf then issuing CA
    found, ignored = load_signers(pem(ours.root.cert), [
        ("issuing.crt", pem(foreign.issuing.cert)),
        ("ca-chain.pem", pem(ours.issuing.cert) + pem(ours.root.cert)),
        ("server.crt", server_chain),
    ])
    assert found is not None
    assert found.roots == (ours.root.cert,) and found.issuing == (ours.issuing.cert,)
    [why] = ignored
    assert (why.source, why.position) == ("issuing.crt", 1)
    assert "not certified by a root" in why.reason

def test_root_crt_without_a_self_signed_ca_trusts_nothing(ours):
    for data in (b"", b"garbage", pem(ours.issuing.cert)):
        found, ignored = load_signers(data, [("issuing.crt", pem(ours.issuing.cert))])
        assert found is None and ignored[-1].reason == "no self-signed CA certificate"

# -- staleness ------------------------------------------------------------------------------

def test_the_set_is_stale_once_any_issuers_latest_crl_is_past_its_next_update(ours, signers):
    old = crl(ours.issuing, 1, now=NOW - dt.timedelta(days=60), number=1)
    fresh = crl(ours.issuing, 2, now=NOW, number=2)
    # An old CRL next to a fresh one of the same CA: the fresh one decides (as in OpenSSL);
    # both lists count.
    revoked, _ = verify_crls(old + fresh, signers)
    assert revoked is not None and revoked.serials == {1, 2}
    assert revoked.next_update == NOW + dt.timedelta(days=30)
    assert not revoked.stale(NOW + dt.timedelta(days=30))
    assert revoked.stale(NOW + dt.timedelta(days=30, seconds=1))
    # A stale CRL of the other trusted CA (here the root) makes the whole set stale.
    root_stale = crl(ours.root, now=NOW - dt.timedelta(days=60))
    revoked, _ = verify_crls(fresh + root_stale, signers)
    assert revoked is not None and revoked.stale(NOW)

# -- TLSContexts: the revoked set apart from the context --------------------------------------

@pytest.fixture
def gateway_home(ca_home: CAHome, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(ca_home.path, home,
                    ignore=shutil.ignore_patterns("*.key", "inventory.db*", "operator"))
    shutil.copy(ca_home.path / "server" / "server.key", home / "server" / "server.key")
    return home

class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

def test_a_new_crl_applies_while_the_context_cannot_be_rebuilt(ca_home, gateway_home):
    clock = Clock()
    tls = TLSContexts(load_config(None, {"ca_home": gateway_home}), clock=clock)
    assert tls.refusal(1234) is None
    (gateway_home / "server" / "server.key").write_bytes(b"mid-rotation")
    issuer = ca_home.issuer
    (gateway_home / "crl.pem").write_bytes(crl(issuer, 1234, now=clock.now, number=10**6))
    assert tls.revocation_changed() and tls.context_changed()
    load = tls.reload_revoked()
    assert load.applied and 1234 in tls.revoked
    with pytest.raises(ConfigError, match="server"):
        tls.rebuild()
    assert 1234 not in tls.state.revoked  # the old context stays...
    assert tls.refusal(1234) == ("CERT_REVOKED", "certificate revoked")  # ...the set applies
    assert not tls.context_changed()  # a failed build is not retried until a file changes
    clock.now += dt.timedelta(days=31)
    assert tls.refusal(1)[0] == "CRL_EXPIRED"

def test_a_file_without_a_valid_crl_keeps_the_set_and_refuses_to_start(ca_home, gateway_home,
                                                                         foreign_ca):
    config = load_config(None, {"ca_home": gateway_home})
    (gateway_home / "crl.pem").write_bytes(crl(ca_home.issuer, 77, now=dt.datetime.now(dt.UTC),
                                               number=10**6 + 1))
    tls = TLSContexts(config)
    (gateway_home / "crl.pem").write_bytes(crl(foreign_ca.issuing, 1))
    load = tls.reload_revoked()
    assert not load.applied and "no valid CRL" in (load.problem or "")
    assert 77 in tls.revoked and not tls.context_changed()
    # With the root gone too, the CAs loaded before still verify a new CRL.
    (gateway_home / "root.crt").unlink()
    (gateway_home / "crl.pem").write_bytes(crl(ca_home.issuer, 78, now=dt.datetime.now(dt.UTC),
                                               number=10**6 + 2))
    assert tls.reload_revoked().applied and 78 in tls.revoked and 77 not in tls.revoked
    # At start there is no previous set: the gateway refuses to run.
    shutil.copy(ca_home.path / "root.crt", gateway_home / "root.crt")
    (gateway_home / "crl.pem").write_bytes(crl(foreign_ca.issuing, 1))
    with pytest.raises(ConfigError, match="no valid CRL"):
        TLSContexts(config)
