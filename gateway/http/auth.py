"""Who an HTTPS client is: an operator certificate from our CA, or nobody.

The TLS layer (a context with `CERT_OPTIONAL`, our root, our CRL) has already proved the
chain, the validity period and that the leaf is not revoked, when a certificate was sent at
all. This module decides whether the verified certificate is an operator's: EKU clientAuth,
not a CA, exactly one SAN URI `urn:fleetgate:operator:<name>`. A device certificate
(`urn:uuid:...`) is a valid client of the MQTT side only and gets 403 here.

The serial is checked against the current CRL once more: the CRL may have changed during the
handshake, and a resumed TLS 1.2 session skips OpenSSL's verification.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.identity import OPERATOR_URI_PREFIX

from .errors import ApiError


@dataclass(frozen=True, slots=True)
class Operator:
    """An authenticated operator: the name its certificate carries, and which certificate."""

    name: str
    serial: int


CERTIFICATE_REQUIRED = ApiError(
    401, "certificate_required",
    "this endpoint needs an operator client certificate (fleet-ca issue operator)")


def authenticate(der: bytes | None, revoked: frozenset[int], now: datetime | None = None
                 ) -> Operator | ApiError:
    """Read the operator from a DER certificate the TLS layer verified (None: none sent).

    Returns the `Operator`, or the `ApiError` (401 or 403) every protected route answers.
    Never raises for any certificate content.
    """
    if not der:
        return CERTIFICATE_REQUIRED
    try:
        cert = x509.load_der_x509_certificate(der)
        ext = cert.extensions
        basic = _get(ext, x509.BasicConstraints)
        san = _get(ext, x509.SubjectAlternativeName)
        eku = _get(ext, x509.ExtendedKeyUsage)
        uris = list(san.get_values_for_type(x509.UniformResourceIdentifier)) if san else []
        serial = cert.serial_number
        not_after = cert.not_valid_after_utc
    except ValueError:
        return ApiError(403, "bad_certificate", "the client certificate cannot be parsed")
    if basic is not None and basic.ca:
        return ApiError(403, "not_an_operator", "a CA certificate is not an operator")
    if eku is None or ExtendedKeyUsageOID.CLIENT_AUTH not in list(eku):
        return ApiError(403, "not_an_operator", "the certificate lacks EKU clientAuth")
    names = [u[len(OPERATOR_URI_PREFIX):] for u in uris if u.startswith(OPERATOR_URI_PREFIX)]
    if len(names) != 1 or not names[0]:
        return ApiError(403, "not_an_operator",
                        "only operator certificates (SAN URI urn:fleetgate:operator:<name>) "
                        "open the API; device certificates are for MQTT")
    if serial in revoked:
        return ApiError(403, "certificate_revoked", "this operator certificate is revoked")
    if not_after < (now or datetime.now(UTC)):
        return ApiError(403, "certificate_expired", "this operator certificate has expired")
    return Operator(names[0], serial)


def _get(extensions: x509.Extensions, kind: type) -> object | None:
    try:
        return extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
