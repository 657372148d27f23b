"""The gateway's revoked set: the serials of the verified CRLs in crl.pem. Pure (bytes in).

Theory of operation (RFC 5280 section 6.3, reduced to what the gateway needs):

1. Trusted CRL signers (`load_signers`): the self-signed CA certificates in root.crt (their
   self-signature checked), and every CA certificate certified directly by one of those roots
   found in the other trust files (issuing.crt, ca-chain.pem, root.crt itself, the server
   certificate's chain). `fleet-ca` signs its CRL with the issuing CA, certified by the root.
2. Each CRL in crl.pem counts only if it parses, a trusted signer bears its issuer name
   (issuer match), that signer may sign CRLs (KeyUsage cRLSign, when the extension is there),
   and the CRL's signature verifies with that signer's key. Any other CRL is ignored, with its
   reason (`IgnoredCRL`): a CRL from another CA appended to the file revokes nothing.
3. The revoked serials are the union of the verified CRLs' entries. A file with no verified
   CRL gives no `RevokedSet`: the caller keeps the previous one in force, so a bad file never
   admits more devices.
4. Staleness: per issuer, the latest nextUpdate of its verified CRLs (OpenSSL too takes the
   one valid now); the set is stale once any issuer's is past. The gateway then refuses every
   connection (reason CRL_EXPIRED), as OpenSSL refuses full handshakes, so a resumed TLS 1.2
   session (which skips OpenSSL's verification) is refused too.

Serials are matched without their issuer: `fleet-ca` serials are random 159-bit numbers, so a
serial of one trusted CA never names a certificate of another.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

CRL_MARKER = b"-----BEGIN X509 CRL-----"
CERT_MARKER = b"-----BEGIN CERTIFICATE-----"


def pem_blocks(data: bytes, marker: bytes) -> list[bytes]:
    """Each PEM block of one kind in `data`, from its BEGIN line on (text between is ignored)."""
    return [marker + part for part in data.split(marker)[1:]]


@dataclass(frozen=True, slots=True)
class IgnoredCert:
    """A certificate of a trust file that signs no CRL for the gateway, and why."""

    source: str  # file name
    position: int  # 1-based among the file's certificates
    reason: str


@dataclass(frozen=True, slots=True)
class CRLSigners:
    """The CA certificates whose CRLs the gateway believes."""

    roots: tuple[x509.Certificate, ...]
    issuing: tuple[x509.Certificate, ...]

    def named(self, name: x509.Name) -> list[x509.Certificate]:
        return [ca for ca in (*self.roots, *self.issuing) if ca.subject == name]

    def __len__(self) -> int:
        return len(self.roots) + len(self.issuing)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _certified_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _parse_certs(source: str, data: bytes, ignored: list[IgnoredCert]) -> list[x509.Certificate]:
    certs = []
    for position, block in enumerate(pem_blocks(data, CERT_MARKER), 1):
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError as exc:
            ignored.append(IgnoredCert(source, position, f"not a certificate: {exc}"))
    return certs


def load_signers(
    roots_pem: bytes, others: Iterable[tuple[str, bytes]]
) -> tuple[CRLSigners | None, tuple[IgnoredCert, ...]]:
    """The trusted CRL signers from root.crt's bytes and the other trust files' (name, bytes).

    Returns (None, why) when root.crt holds no self-signed CA certificate whose signature
    verifies. Non-CA certificates (a server leaf) are skipped silently; a CA certificate no
    root certifies is reported.
    """
    ignored: list[IgnoredCert] = []
    roots: list[x509.Certificate] = []
    candidates: list[tuple[str, int, x509.Certificate]] = []
    for position, cert in enumerate(_parse_certs("root.crt", roots_pem, ignored), 1):
        if not _is_ca(cert):
            ignored.append(IgnoredCert("root.crt", position, "not a CA certificate"))
        elif cert.subject == cert.issuer and _certified_by(cert, cert):
            roots.append(cert)
        else:
            candidates.append(("root.crt", position, cert))  # an issuing CA kept beside it
    if not roots:
        return None, (*ignored, IgnoredCert("root.crt", 0, "no self-signed CA certificate"))
    for source, data in others:
        for position, cert in enumerate(_parse_certs(source, data, ignored), 1):
            if _is_ca(cert) and cert not in roots:
                candidates.append((source, position, cert))
    issuing: list[x509.Certificate] = []
    for source, position, cert in candidates:
        if cert in issuing:
            continue  # the same issuing CA in issuing.crt and ca-chain.pem
        if any(_certified_by(cert, root) for root in roots):
            issuing.append(cert)
        else:
            ignored.append(IgnoredCert(source, position,
                                       f"{cert.subject.rfc4514_string()} is not certified "
                                       "by a root in root.crt"))
    return CRLSigners(tuple(roots), tuple(issuing)), tuple(ignored)


@dataclass(frozen=True, slots=True)
class IgnoredCRL:
    """A CRL of crl.pem that does not count, and why (logged as `crl_ignored`)."""

    position: int  # 1-based among the file's CRLs
    issuer: str | None  # RFC 4514, when it parsed
    reason: str


@dataclass(frozen=True, slots=True)
class RevokedSet:
    """The serials listed by the verified CRLs, and when the first of them goes stale."""

    serials: frozenset[int]
    next_update: datetime | None  # None: no verified CRL names a nextUpdate
    crls: int  # how many CRLs were verified
    pem: bytes  # those CRLs, for OpenSSL (the TLS context loads exactly these)

    def __contains__(self, serial: object) -> bool:
        return serial in self.serials

    def __len__(self) -> int:
        return len(self.serials)

    def stale(self, now: datetime) -> bool:
        """Whether a verified CRL is past its nextUpdate (OpenSSL: CRL_EXPIRED)."""
        return self.next_update is not None and now > self.next_update


def _signature_problem(crl: x509.CertificateRevocationList, signers: CRLSigners) -> str | None:
    named = signers.named(crl.issuer)
    if not named:
        return "issuer is not a CA the gateway trusts (root.crt, issuing.crt, ca-chain.pem)"
    allowed = [ca for ca in named if _may_sign_crls(ca)]
    if not allowed:
        return "the trusted CA of that name may not sign CRLs (no cRLSign key usage)"
    for ca in allowed:
        try:
            if crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
                return None
        except (TypeError, ValueError):
            continue
    return "signature does not verify with the trusted CA of that name"


def _may_sign_crls(ca: x509.Certificate) -> bool:
    try:
        usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return usage.crl_sign


def verify_crls(
    data: bytes, signers: CRLSigners
) -> tuple[RevokedSet | None, tuple[IgnoredCRL, ...]]:
    """Verify every CRL in crl.pem's bytes: (the revoked set, or None without a verified CRL;
    the CRLs ignored, with their reasons)."""
    ignored: list[IgnoredCRL] = []
    serials: set[int] = set()
    latest: dict[bytes, datetime | None] = {}  # issuer (DER) -> its latest nextUpdate
    verified: list[bytes] = []
    for position, block in enumerate(pem_blocks(data, CRL_MARKER), 1):
        try:
            crl = x509.load_pem_x509_crl(block)
        except ValueError as exc:
            ignored.append(IgnoredCRL(position, None, f"not a CRL: {exc}"))
            continue
        issuer = crl.issuer.rfc4514_string()
        problem = _signature_problem(crl, signers)
        if problem is not None:
            ignored.append(IgnoredCRL(position, issuer, problem))
            continue
        serials.update(entry.serial_number for entry in crl)
        key = crl.issuer.public_bytes()
        next_update = crl.next_update_utc
        if key not in latest:
            latest[key] = next_update
        elif latest[key] is not None:
            latest[key] = None if next_update is None else max(next_update, latest[key])
        verified.append(crl.public_bytes(Encoding.PEM))
    if not verified:
        return None, tuple(ignored)
    dates = [d for d in latest.values() if d is not None]
    return (RevokedSet(frozenset(serials), min(dates, default=None), len(verified),
                       b"".join(verified)), tuple(ignored))
