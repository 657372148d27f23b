"""The provisioning seam's pure parts: what counts as a claim, a CSR payload, the config."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from ca.profiles import build_claim
from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.provisioning import MAX_CSR_BYTES, claim_of, csr_der

NOW = dt.datetime.now(dt.UTC)


def test_a_claim_certificate_is_a_claim_and_a_device_certificate_is_not(ca_home):
    key = ec.generate_private_key(ec.SECP256R1())
    claim = build_claim(key.public_key(), issuer=ca_home.issuer, batch="b1", now=NOW)
    found = claim_of(claim.public_bytes(Encoding.DER))
    assert found is not None and found.batch == "b1" and found.serial == claim.serial_number
    assert claim_of(None) is None and claim_of(b"junk") is None


def test_csr_payloads_pem_or_der_and_nothing_else():
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(
        key, hashes.SHA256())
    der = csr.public_bytes(Encoding.DER)
    assert csr_der(csr.public_bytes(Encoding.PEM)) == der
    assert csr_der(der) == der
    assert csr_der(b"") is None and csr_der(b"hello") is None
    assert csr_der(b"-----BEGIN CERTIFICATE REQUEST-----\n!!\n-----END") is None
    assert csr_der(b"\x30" + b"\x00" * MAX_CSR_BYTES) is None


@pytest.mark.parametrize("value", ["http://x", "unix", "signer.sock"])
def test_a_signer_that_is_not_unix_or_https_is_a_config_error(value):
    with pytest.raises(ConfigError, match="signer"):
        load_config(None, {"signer": value})
