"""Certificate signing requests: parse, and check proof of possession. Pure.

A device that keeps its own key sends a PKCS#10 CSR (RFC 2986). The CA takes only its public
key from it, after checking the CSR's self-signature (proof that the sender holds the private
key); the requested subject and extensions are ignored, the device profile decides them.
"""

from __future__ import annotations

from cryptography import x509

from .errors import BadCSRError, BadInputError, ForgedCSRError
from .keys import PublicKey, check_acceptable_public_key

MAX_CSR_BYTES = 64 * 1024


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Parse a PEM or DER CSR and check it. Returns it; its public key is safe to certify.

    Raises BadCSRError (not a CSR, unacceptable key) or ForgedCSRError (bad signature).
    """
    if len(data) > MAX_CSR_BYTES:
        raise BadCSRError(f"CSR is too large ({len(data)} bytes)")
    try:
        if b"-----BEGIN" in data:
            csr = x509.load_pem_x509_csr(data)
        else:
            csr = x509.load_der_x509_csr(data)
    except ValueError:
        raise BadCSRError("not a PEM or DER certificate signing request") from None
    try:
        key = csr.public_key()
    except (ValueError, TypeError) as exc:
        raise BadCSRError(f"CSR public key is unusable: {exc}") from None
    try:
        check_acceptable_public_key(key)
    except BadInputError as exc:
        raise BadCSRError(f"CSR key refused: {exc}") from None
    try:
        ok = csr.is_signature_valid
    except Exception:  # unsupported signature algorithm inside a parseable CSR
        ok = False
    if not ok:
        raise ForgedCSRError("CSR signature does not match its public key (no proof of possession)")
    return csr


def csr_public_key(csr: x509.CertificateSigningRequest) -> PublicKey:
    return csr.public_key()  # type: ignore[return-value]
