"""Offline verification of a certificate against a CA: chain, then revocation. Pure.

The chain is checked by `cryptography.x509.verification` (RFC 5280 path validation with the
CA/Browser-style profile checks): client certificates (devices, operators) with the client
verifier, server certificates with the server verifier for their first SAN. Revocation is
checked against the CRL, whose signature must be the issuing CA's.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509 import verification as xv
from cryptography.x509.oid import ExtendedKeyUsageOID

from .errors import BadInputError, RevokedError, VerifyFailedError
from .profiles import check_utc


@dataclass(frozen=True, slots=True)
class VerifyResult:
    serial: int
    subject: str
    chain: tuple[str, ...]  # subjects, leaf first, root last


def load_pem_chain(data: bytes) -> list[x509.Certificate]:
    """The certificates in a PEM file, leaf first. Raises BadInputError."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        try:
            certs = [x509.load_der_x509_certificate(data)]
        except ValueError:
            raise BadInputError("not a PEM or DER certificate") from None
    return certs


def _is_server(cert: x509.Certificate) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.SERVER_AUTH in eku


def _server_subject(cert: x509.Certificate) -> xv.Subject:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise VerifyFailedError("server certificate has no subjectAltName") from None
    dns = san.get_values_for_type(x509.DNSName)
    if dns:
        # A wildcard name is checked with a host it covers.
        return xv.DNSName("x" + dns[0][1:] if dns[0].startswith("*.") else dns[0])
    ips = san.get_values_for_type(x509.IPAddress)
    if ips:
        return xv.IPAddress(ipaddress.ip_address(ips[0]))
    raise VerifyFailedError("server certificate names no DNS name or IP address")


def verify_chain(
    certs: Sequence[x509.Certificate],
    *,
    root: x509.Certificate,
    issuing: x509.Certificate,
    crl: x509.CertificateRevocationList | None,
    now: dt.datetime,
) -> VerifyResult:
    """Verify `certs[0]` (with any of `certs[1:]` as extra intermediates) up to `root`.

    Raises VerifyFailedError (no valid chain: wrong CA, expired, bad profile) or
    RevokedError (valid chain, but the CRL lists the serial).
    """
    if not certs:
        raise BadInputError("no certificate to verify")
    leaf = certs[0]
    intermediates = [issuing, *certs[1:]]
    builder = xv.PolicyBuilder().store(xv.Store([root])).time(check_utc(now))
    try:
        if _is_server(leaf):
            chain = builder.build_server_verifier(_server_subject(leaf)).verify(
                leaf, intermediates
            )
        else:
            chain = builder.build_client_verifier().verify(leaf, intermediates).chain
    except xv.VerificationError as exc:
        raise VerifyFailedError(f"does not verify: {exc}") from None
    result = VerifyResult(
        leaf.serial_number, leaf.subject.rfc4514_string(),
        tuple(c.subject.rfc4514_string() for c in chain),
    )
    if crl is not None:
        if crl.issuer != issuing.subject or not crl.is_signature_valid(issuing.public_key()):
            raise VerifyFailedError("the CRL is not signed by the issuing CA")
        entry = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
        if entry is not None:
            reason = "unspecified"
            try:
                reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
            except x509.ExtensionNotFound:
                pass
            raise RevokedError(
                f"revoked at {entry.revocation_date_utc:%Y-%m-%dT%H:%M:%SZ} (reason {reason})"
            )
    return result
