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
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519
from cryptography.x509 import verification as xv
from cryptography.x509.oid import ExtendedKeyUsageOID

from .crl import REASONS
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
    issuing: x509.Certificate | Sequence[x509.Certificate],
    crl: x509.CertificateRevocationList | Sequence[x509.CertificateRevocationList] | None,
    now: dt.datetime,
) -> VerifyResult:
    """Verify `certs[0]` (with any of `certs[1:]` as extra intermediates) up to `root`.

    `issuing` is the issuing CA, or every issuing CA still served after a rotation; `crl`
    their CRL(s): the one whose issuer signed the leaf decides revocation.

    Raises VerifyFailedError (no valid chain: wrong CA, expired, bad profile) or
    RevokedError (valid chain, but the CRL lists the serial).
    """
    if not certs:
        raise BadInputError("no certificate to verify")
    leaf = certs[0]
    issuings = [issuing] if isinstance(issuing, x509.Certificate) else list(issuing)
    crls = [] if crl is None else [crl] if isinstance(crl, x509.CertificateRevocationList) \
        else list(crl)
    # The issuing CA that signed the leaf: the one named as its issuer (names are unique).
    signer = next((c for c in issuings if c.subject == leaf.issuer), issuings[0])
    intermediates = [*issuings, *certs[1:]]
    if _is_eddsa(root) or _is_eddsa(signer):
        chain = _verify_eddsa(leaf, signer, root, check_utc(now))
        return _after_chain(leaf, chain, signer, crls)
    builder = xv.PolicyBuilder().store(xv.Store([root])).time(check_utc(now))
    try:
        if _is_server(leaf):
            chain = builder.build_server_verifier(_server_subject(leaf)).verify(
                leaf, intermediates
            )
        else:
            chain = builder.build_client_verifier().verify(leaf, intermediates).chain
    except xv.VerificationError as exc:
        raise VerifyFailedError(_explain(exc, leaf, [root, *issuings])) from None
    return _after_chain(leaf, chain, chain[1] if len(chain) > 2 else signer, crls)


def _explain(exc: xv.VerificationError, leaf: x509.Certificate,
             known: Sequence[x509.Certificate]) -> str:
    """One line a person can act on, for the verifier's terse reasons."""
    if leaf.issuer not in {c.subject for c in known}:
        return (f"does not verify: not issued by this CA (its issuer is "
                f"{leaf.issuer.rfc4514_string()}; this CA's issuing CA is "
                f"{known[1].subject.rfc4514_string()})")
    if "candidates exhausted" in str(exc):
        return "does not verify: no valid chain to this CA's root (a signature or a " \
               "validity period does not check out)"
    return f"does not verify: {exc}"


def _is_eddsa(cert: x509.Certificate) -> bool:
    return isinstance(cert.public_key(), ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)


def _verify_eddsa(
    leaf: x509.Certificate, issuing: x509.Certificate, root: x509.Certificate, now: dt.datetime
) -> list[x509.Certificate]:
    """cryptography's verifier implements the Web PKI profile, which has no EdDSA; for an
    Ed25519 CA we check the fixed two-level chain ourselves: signatures, names, validity,
    CA flags and path length."""
    chain = [leaf, issuing, root]
    try:
        leaf.verify_directly_issued_by(issuing)
        issuing.verify_directly_issued_by(root)
        root.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise VerifyFailedError(f"does not verify: {exc or 'bad signature'}") from None
    for cert in chain:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise VerifyFailedError(
                f"does not verify: {cert.subject.rfc4514_string()} is not valid now"
            )
    for cert, want_ca in ((leaf, False), (issuing, True), (root, True)):
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            raise VerifyFailedError("does not verify: missing basicConstraints") from None
        if bc.ca != want_ca:
            raise VerifyFailedError(
                f"does not verify: {cert.subject.rfc4514_string()} has the wrong CA flag"
            )
    return chain


def _after_chain(
    leaf: x509.Certificate,
    chain: Sequence[x509.Certificate],
    issuing: x509.Certificate,
    crls: Sequence[x509.CertificateRevocationList],
) -> VerifyResult:
    result = VerifyResult(
        leaf.serial_number, leaf.subject.rfc4514_string(),
        tuple(c.subject.rfc4514_string() for c in chain),
    )
    if crls:
        crl = next((c for c in crls if c.issuer == issuing.subject), None)
        if crl is None or not crl.is_signature_valid(issuing.public_key()):
            raise VerifyFailedError("the CRL is not signed by the issuing CA")
        entry = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
        if entry is not None:
            reason = "unspecified"
            try:
                flag = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
                reason = next((k for k, v in REASONS.items() if v == flag), flag.name)
            except x509.ExtensionNotFound:
                pass
            raise RevokedError(
                f"{result.subject} serial {leaf.serial_number:x} was revoked at"
                f" {entry.revocation_date_utc:%Y-%m-%dT%H:%M:%SZ} (reason {reason})"
            )
    return result
