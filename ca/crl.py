"""Certificate revocation lists (RFC 5280 section 5). Pure builders and readers.

Each issuing CA signs the CRL that covers the certificates it issued (devices, servers,
operators); after a rotation the home publishes one CRL per issuing CA still served. Every
CRL carries a CRL number (monotonic, kept in the inventory), the issuing CA's AKI, and for
each entry its revocation date and reason code.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509

from .errors import BadInputError
from .keys import signing_hash
from .profiles import Issuer, check_utc

CRL_DAYS = 30  # nextUpdate; run `fleet-ca crl` (cron) well before it passes

# The CLI spellings of RFC 5280 reason codes (removeFromCRL is not a reason one revokes with).
REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key-compromise": x509.ReasonFlags.key_compromise,
    "ca-compromise": x509.ReasonFlags.ca_compromise,
    "affiliation-changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
    "certificate-hold": x509.ReasonFlags.certificate_hold,
    "privilege-withdrawn": x509.ReasonFlags.privilege_withdrawn,
}


def check_reason(reason: str) -> str:
    if reason not in REASONS:
        raise BadInputError(f"unknown reason {reason!r} (choose {', '.join(REASONS)})")
    return reason


@dataclass(frozen=True, slots=True)
class RevokedEntry:
    serial: int
    revoked_at: dt.datetime
    reason: str = "unspecified"


def build_crl(
    issuer: Issuer,
    revoked: Iterable[RevokedEntry],
    *,
    now: dt.datetime,
    number: int,
    days: int = CRL_DAYS,
) -> x509.CertificateRevocationList:
    """A CRL signed by `issuer` listing exactly `revoked`."""
    now = check_utc(now)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(issuer.aki, critical=False)
    )
    for entry in revoked:
        rc = x509.RevokedCertificateBuilder().serial_number(entry.serial).revocation_date(
            check_utc(entry.revoked_at)
        )
        if entry.reason != "unspecified":
            # RFC 5280 5.3.1: omit the reason code rather than use unspecified.
            rc = rc.add_extension(x509.CRLReason(REASONS[entry.reason]), critical=False)
        builder = builder.add_revoked_certificate(rc.build())
    return builder.sign(issuer.key, signing_hash(issuer.key))


def revoked_serials(crl: x509.CertificateRevocationList) -> set[int]:
    return {rc.serial_number for rc in crl}


def authority_key_id(der: bytes) -> bytes | None:
    """The AKI key identifier of a DER certificate: which issuing CA signed it."""
    try:
        cert = x509.load_der_x509_certificate(der)
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    return aki.key_identifier


def build_crls(
    issuers: Sequence[Issuer],
    revoked: Iterable[tuple[bytes | None, RevokedEntry]],
    *,
    now: dt.datetime,
    numbers: Callable[[], int],
) -> list[x509.CertificateRevocationList]:
    """One CRL per issuer, each listing the entries whose AKI key id is that issuer's
    (`revoked` pairs (key id, entry); an entry without a key id goes to `issuers[0]`, one of
    an issuer not in `issuers`, i.e. a retired one, to none). `numbers()` gives each CRL its
    number."""
    by_key: dict[bytes | None, list[RevokedEntry]] = {
        i.aki.key_identifier: [] for i in issuers}
    by_key[None] = by_key[issuers[0].aki.key_identifier]
    for key_id, entry in revoked:
        by_key.get(key_id, []).append(entry)
    return [build_crl(i, by_key[i.aki.key_identifier], now=now, number=numbers())
            for i in issuers]
