"""Claim certificates (provisioning by claim) and registrar certificates.

Theory of operation: a production line cannot hold a CA, so it gets a *claim*: a short-lived
client certificate for a batch (SAN URI `urn:fleetgate:claim:<batch>`, see
`ca.profiles.build_claim`) whose key is shared by the batch's devices, recorded in the
`claims` table with a use count. Each device makes its own key and exchanges the claim, once,
for a unique device identity at the online signer; `use_claim` is the one place a use is
spent: inside the signer's write transaction it checks that the claim is known, unrevoked,
unexpired and has uses left, then decrements it, so a use is spent if and only if the
certificate it paid for is recorded. A claim is revoked like any certificate (`fleet-ca
revoke SERIAL`), which stops further use at once. The gateway admits no claim certificate
as a device (it names no `urn:uuid:` network).

A *registrar* certificate (`urn:fleetgate:registrar:<name>`) authenticates a trusted client
of the online signer (e.g. the gateway) that presents claims on behalf of devices.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from . import audit
from .errors import BadInputError, ClaimRefusedError
from .files import prepare_out_dir
from .inventory import CertRecord, from_iso, iso, serial_hex
from .keys import KeyType, generate_key, private_key_pem
from .profiles import (
    CLAIM_DAYS,
    CLAIM_URN_PREFIX,
    LEAF_DAYS,
    Kind,
    build_claim,
    build_registrar,
    check_utc,
    named_urn,
)
from .store import CAHome, LeafFiles, utcnow

USES_MAX = 1_000_000  # one claim for a whole production run is fine; a typo of 10^12 is not
_PEM = Encoding.PEM


@dataclass(frozen=True, slots=True)
class ClaimStatus:
    """A claim as the inventory knows it."""

    serial: int
    batch: str
    uses_total: int
    uses_left: int
    not_after: dt.datetime
    revoked: bool

    def to_json(self) -> dict[str, object]:
        return {"serial": serial_hex(self.serial), "batch": self.batch,
                "uses_total": self.uses_total, "uses_left": self.uses_left,
                "not_after": iso(self.not_after), "revoked": self.revoked}


def issue_claim(
    home: CAHome,
    out_dir: os.PathLike[str] | str,
    *,
    batch: str,
    uses: int,
    days: int = CLAIM_DAYS,
    now: dt.datetime | None = None,
) -> LeafFiles:
    """Write OUT/claim.crt (leaf + issuing), OUT/claim.key (0600), OUT/ca.crt (root) and
    OUT/claim.json; record the claim with `uses` uses. Raises BadInputError, OutputError,
    PassphraseError."""
    if isinstance(uses, bool) or not isinstance(uses, int) or not 1 <= uses <= USES_MAX:
        raise BadInputError(f"--uses must be a whole number from 1 to {USES_MAX}, not {uses!r}")
    now = check_utc(now or utcnow())
    key = generate_key(KeyType.EC_P256)
    cert = build_claim(key.public_key(), issuer=home.issuer, batch=batch, now=now, days=days)
    out = prepare_out_dir(out_dir)
    meta = {"batch": batch, "uses": uses, "serial": serial_hex(cert.serial_number),
            "not_after": iso(cert.not_valid_after_utc)}
    files = {"claim.key": (private_key_pem(key), 0o600),
             "claim.crt": (cert.public_bytes(_PEM) + home.issuing_cert.public_bytes(_PEM),
                           0o644),
             "ca.crt": (home.root_pem, 0o644),
             "claim.json": (json.dumps(meta, indent=2).encode() + b"\n", 0o644)}

    def record_uses(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO claims (serial, batch, uses_total, uses_left)"
                     " VALUES (?,?,?,?)", (serial_hex(cert.serial_number), batch, uses, uses))

    home.write_recorded(out, files, CertRecord.of(cert, Kind.CLAIM, None, now),
                        details={"batch": batch, "uses": uses}, also=record_uses)
    return LeafFiles(cert.serial_number, out / "claim.crt", out / "claim.key", out / "ca.crt")


def issue_registrar(
    home: CAHome,
    out_dir: os.PathLike[str] | str,
    *,
    name: str,
    days: int = LEAF_DAYS,
    now: dt.datetime | None = None,
) -> LeafFiles:
    """Write OUT/registrar.crt (leaf + issuing), OUT/registrar.key (0600), OUT/ca.crt."""
    now = check_utc(now or utcnow())
    key = generate_key(KeyType.EC_P256)
    cert = build_registrar(key.public_key(), issuer=home.issuer, name=name, now=now, days=days)
    out = prepare_out_dir(out_dir)
    files = {"registrar.key": (private_key_pem(key), 0o600),
             "registrar.crt": (cert.public_bytes(_PEM) + home.issuing_cert.public_bytes(_PEM),
                               0o644),
             "ca.crt": (home.root_pem, 0o644)}
    home.write_recorded(out, files, CertRecord.of(cert, Kind.REGISTRAR, None, now),
                        details={"name": name})
    return LeafFiles(cert.serial_number, out / "registrar.crt", out / "registrar.key",
                     out / "ca.crt")


def claim_status(conn: sqlite3.Connection, serial: int) -> ClaimStatus | None:
    """The claim with this serial, or None if no claim has it."""
    row = conn.execute(
        "SELECT c.batch, c.uses_total, c.uses_left, k.not_after, k.status FROM claims c"
        " JOIN certificates k ON k.serial = c.serial WHERE c.serial = ?",
        (serial_hex(serial),)).fetchone()
    if row is None:
        return None
    return ClaimStatus(serial, row[0], row[1], row[2], from_iso(row[3]), row[4] == "revoked")


def claims(conn: sqlite3.Connection) -> list[ClaimStatus]:
    """Every claim, oldest first."""
    rows = conn.execute("SELECT c.serial FROM claims c JOIN certificates k ON k.serial ="
                        " c.serial ORDER BY k.issued_at, c.serial").fetchall()
    return [claim_status(conn, int(r[0], 16)) for r in rows]  # type: ignore[misc]


def use_claim(conn: sqlite3.Connection, cert: x509.Certificate, *, now: dt.datetime,
              actor: str, network: str) -> ClaimStatus:
    """Spend one use of the claim `cert` (call inside the write transaction that records
    the certificate it pays for). Records a `claim-use` audit entry naming `network`.

    Raises ClaimRefusedError with reason unknown, revoked, expired or exhausted.
    """
    batch = named_urn(cert, CLAIM_URN_PREFIX)
    status = claim_status(conn, cert.serial_number) if batch is not None else None
    der = conn.execute("SELECT der FROM certificates WHERE serial = ?",
                       (serial_hex(cert.serial_number),)).fetchone()
    if status is None or status.batch != batch or der[0] != cert.public_bytes(Encoding.DER):
        raise ClaimRefusedError("unknown", "not a claim this CA issued")
    if status.revoked:
        raise ClaimRefusedError("revoked", f"claim {status.batch} is revoked")
    if now > status.not_after:
        raise ClaimRefusedError("expired", f"claim {status.batch} expired at"
                                f" {iso(status.not_after)}")
    updated = conn.execute("UPDATE claims SET uses_left = uses_left - 1 WHERE serial = ?"
                           " AND uses_left > 0", (serial_hex(cert.serial_number),)).rowcount
    if not updated:
        raise ClaimRefusedError("exhausted", f"claim {status.batch} has no uses left"
                                f" (of {status.uses_total})")
    audit.append(conn, [audit.Event("claim-use", serial_hex(cert.serial_number), {
        "batch": status.batch, "network": network, "uses_left": status.uses_left - 1})],
        actor=actor, at=now)
    return claim_status(conn, cert.serial_number)  # type: ignore[return-value]


__all__ = ["ClaimStatus", "USES_MAX", "claim_status", "claims", "issue_claim",
           "issue_registrar", "use_claim"]
