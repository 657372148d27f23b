"""What the online signer may sign, and the record it keeps. No networking here.

Theory of operation: the signer holds the issuing CA key (never the root) and signs exactly
one profile, the device profile, for exactly two kinds of request:

- **enroll** (provisioning by claim): a CSR presented with a claim certificate (by the device
  itself over mutual TLS, or by a registrar on its behalf). The claim must be known,
  unrevoked, unexpired and have uses left (`ca.claims.use_claim`); the result names a NEW
  network UUID.
- **reenroll** (renewal): a CSR presented with a current device certificate (known to the
  inventory, a device, unrevoked, unexpired). The result names the same network UUID; the
  old certificate is scheduled to be revoked as superseded after `supersede_grace` (or at
  once on request), by `sweep`; or as soon as the new one is first used (`first_use`: a
  gateway admitted it, or the device said so with it).

Every CSR is checked for proof of possession and an acceptable key (`ca.csr.load_csr`); a
CSR that asks for a CA or a server certificate is refused rather than silently narrowed, so a
confused or hostile client learns the reason. Requests are rate-limited per claim and per
network (token buckets, bounded in number). A signature, its claim use, its supersede
schedule and its audit entry commit in one inventory transaction: a refused or failed
request spends nothing and records nothing but its refusal in the log.

A registrar may also **revoke** device certificates (`revoke`: by serial or network, with a
reason a registrar may give): the revocation, its audit entries (the registrar, and who
asked it of the registrar) and the new CRL commit together.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from .. import audit, claims
from ..csr import load_csr
from ..errors import BadCSRError, ClaimRefusedError, ForgedCSRError, SignRefusedError
from ..inventory import CertRecord, iso, serial_hex
from ..profiles import LEAF_DAYS, Kind, build_device, check_utc, network_of
from ..store import CAHome

# What a registrar may revoke a device certificate for (the CLI's spellings, ca.crl); the
# others are the CA operator's own: superseded (the signer's renewals), CA compromise, hold.
REVOKE_REASONS = ("unspecified", "key-compromise", "affiliation-changed",
                  "cessation-of-operation", "privilege-withdrawn")


@dataclass(frozen=True, slots=True)
class SignerLimits:
    """Limits of the online signer (docs/operations.md, "The online signer")."""

    claim_burst: int = 20  # signatures a claim may get at once...
    claim_per_minute: float = 60.0  # ...and refilled at this rate
    network_burst: int = 3  # renewals a network may get at once...
    network_per_hour: float = 6.0  # ...and refilled at this rate
    max_tracked: int = 100_000  # rate-limit buckets kept (least recently used dropped)
    device_days: int = LEAF_DAYS  # validity of what the signer issues
    supersede_grace: dt.timedelta = dt.timedelta(days=7)  # old certificate kept after renewal


@dataclass(frozen=True, slots=True)
class Issued:
    """A signature the signer made."""

    network: uuid.UUID
    cert: x509.Certificate
    issuing: x509.Certificate  # what signed it (sent along so the device has its chain)

    @property
    def chain_pem(self) -> bytes:
        return self.cert.public_bytes(Encoding.PEM) + self.issuing.public_bytes(Encoding.PEM)


class _Buckets:
    """Token buckets keyed by a string, at most `size` of them (LRU). Time is passed in."""

    def __init__(self, burst: int, per_second: float, size: int) -> None:
        self.burst, self.rate, self.size = burst, per_second, size
        self._b: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float) -> float:
        """Take one token: 0.0 if granted, else the seconds until one is available."""
        tokens, at = self._b.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate)
        if tokens < 1.0:
            self._b[key] = (tokens, now)
            return (1.0 - tokens) / self.rate if self.rate > 0 else float("inf")
        self._b[key] = (tokens - 1.0, now)
        while len(self._b) > self.size:
            self._b.popitem(last=False)
        return 0.0

    def __len__(self) -> int:
        return len(self._b)


class Signer:
    """The signing policy over one CA home. All methods run in the caller's thread."""

    def __init__(self, home: CAHome, limits: SignerLimits = SignerLimits()) -> None:
        self.home = home
        self.limits = limits
        self._claims = _Buckets(limits.claim_burst, limits.claim_per_minute / 60.0,
                                limits.max_tracked)
        self._networks = _Buckets(limits.network_burst, limits.network_per_hour / 3600.0,
                                  limits.max_tracked)
        self.counters: dict[str, int] = {}

    def count(self, name: str) -> None:
        """Add one to counter `name` (see `statistics`)."""
        self.counters[name] = self.counters.get(name, 0) + 1

    def statistics(self) -> dict[str, object]:
        return {"counters": dict(self.counters), "claim_buckets": len(self._claims),
                "network_buckets": len(self._networks)}

    # -- the two requests ------------------------------------------------------------------

    def enroll(self, csr_data: bytes, *, claim: x509.Certificate, now: dt.datetime,
               actor: str) -> Issued:
        """Sign a device certificate with a new network UUID for the key in `csr_data`,
        paid for by one use of `claim`. Raises SignRefusedError naming the reason."""
        now = check_utc(now)
        try:
            csr = self._check_csr(csr_data)
            self._rate(self._claims, serial_hex(claim.serial_number), now, "claim")
            network = uuid.uuid4()
            cert = self._build(csr, network, now)
            with self.home.inventory.transaction() as conn:
                status = claims.use_claim(conn, claim, now=now, actor=actor,
                                          network=str(network))
                self._record(conn, cert, network, now, actor, "enroll",
                             {"claim": serial_hex(claim.serial_number), "batch": status.batch})
        except ClaimRefusedError as exc:
            raise self._refused(f"claim_{exc.reason}", str(exc), 403) from None
        self.count("enrolled")
        return Issued(network, cert, self.home.issuing_cert)

    def reenroll(self, csr_data: bytes, *, device: x509.Certificate, now: dt.datetime,
                 actor: str, supersede_now: bool = False) -> Issued:
        """Sign a new certificate for the network of the current device certificate `device`;
        schedule the old one's revocation (superseded) after the grace period, or now.
        Raises SignRefusedError naming the reason."""
        now = check_utc(now)
        network = self._current_device(device, now).network_uuid
        assert network is not None
        csr = self._check_csr(csr_data)
        self._rate(self._networks, str(network), now, "network")
        cert = self._build(csr, network, now)
        due = now if supersede_now else now + self.limits.supersede_grace
        with self.home.inventory.transaction() as conn:
            self._record(conn, cert, network, now, actor, "reenroll",
                         {"replaces": serial_hex(device.serial_number),
                          "supersede_at": iso(due)})
            conn.execute("INSERT OR REPLACE INTO supersede (serial, due) VALUES (?, ?)",
                         (serial_hex(device.serial_number), iso(due)))
        self.count("reenrolled")
        if supersede_now:
            self.sweep(now)
        return Issued(network, cert, self.home.issuing_cert)

    def first_use(self, device: x509.Certificate, *, now: dt.datetime, actor: str) -> int:
        """`device`, a renewed certificate, was used (a gateway admitted it): revoke now, as
        superseded, the earlier certificates of its network still waiting for their grace.
        Returns how many were revoked (0 when none waited: the call is idempotent). Raises
        SignRefusedError when `device` is not a current device certificate of this CA."""
        now = check_utc(now)
        record = self._current_device(device, now)
        conn = self.home.inventory.connection
        older = [s for (s,) in conn.execute(
            "SELECT s.serial FROM supersede s JOIN certificates c ON c.serial = s.serial "
            "WHERE c.network_uuid = ? AND c.serial != ? AND c.issued_at <= ?",
            (str(record.network_uuid), serial_hex(record.serial), iso(record.issued_at)))]
        if not older:
            return 0
        with self.home.inventory.transaction() as tx:
            tx.executemany("UPDATE supersede SET due = ? WHERE serial = ?",
                           [(iso(now), s) for s in older])
            audit.append(tx, [audit.Event("first-use", serial_hex(record.serial), {
                "network": str(record.network_uuid), "supersedes": older})],
                actor=actor, at=now)
        self.count("first_use")
        return self.sweep(now)

    def sweep(self, now: dt.datetime) -> int:
        """Revoke (superseded) every renewed certificate whose grace has passed; rewrite the
        CRL if any was. Returns how many were revoked."""
        now = check_utc(now)
        conn = self.home.inventory.connection
        due = [int(s, 16) for (s,) in conn.execute(
            "SELECT serial FROM supersede WHERE due <= ? ORDER BY due LIMIT 1000", (iso(now),))]
        if not due:
            return 0
        issuer = self.home.issuer
        with self.home.inventory.transaction() as tx:
            valid = [s for s in due if (r := self.home.inventory.get(s)) and r.status == "valid"]
            if valid:
                self.home.inventory.mark_revoked(tx, valid, now, "superseded")
                audit.append(tx, [audit.Event("revoke", serial_hex(s), {"reason": "superseded"})
                                  for s in valid], actor=self.home.actor, at=now)
            tx.executemany("DELETE FROM supersede WHERE serial = ?",
                           [(serial_hex(s),) for s in due])
            if valid:
                self.home.write_crl_in(tx, issuer, now)
        self.counters["superseded"] = self.counters.get("superseded", 0) + len(valid)
        return len(valid)

    def revoke(self, *, network: uuid.UUID | None, serial: int | None, reason: str,
               now: dt.datetime, actor: str, by: str | None = None) -> list[int]:
        """Revoke, for a registrar, the device certificate `serial` or every valid one of
        `network` (both given: the serial must be that network's). The revocation, its audit
        entries (actor the registrar, `by` who asked it, e.g. a console account) and the new
        CRL commit in one inventory transaction. Returns the serials revoked.
        Raises SignRefusedError: revoke_reason, not_found (also: not a device certificate),
        already_revoked."""
        now = check_utc(now)
        if reason not in REVOKE_REASONS:
            raise self._refused("revoke_reason",
                                f"reason must be one of {', '.join(REVOKE_REASONS)}")
        inventory = self.home.inventory
        if serial is not None:
            found = [r for r in [inventory.get(serial)] if r is not None
                     and (network is None or r.network_uuid == network)]
        elif network is not None:
            found = inventory.by_network(network)
        else:
            raise self._refused("revoke_target", "name a serial or a network")
        found = [r for r in found if r.kind == Kind.DEVICE]
        if not found:
            raise self._refused("not_found", "no device certificate of this CA by that name",
                                404)
        todo = [r for r in found if r.status == "valid"]
        if not todo:
            raise self._refused("already_revoked", "already revoked", 409)
        issuer = self.home.issuer
        details: dict[str, object] = {"reason": reason} | ({"by": by} if by else {})
        with inventory.transaction() as tx:
            inventory.mark_revoked(tx, [r.serial for r in todo], now, reason)
            audit.append(tx, [audit.Event("revoke", serial_hex(r.serial), {
                "kind": r.kind, "network": str(r.network_uuid), **details}) for r in todo],
                actor=actor, at=now)
            self.home.write_crl_in(tx, issuer, now)
        self.counters["revoked"] = self.counters.get("revoked", 0) + len(todo)
        return [r.serial for r in todo]

    # -- checks and the record -------------------------------------------------------------

    def _current_device(self, device: x509.Certificate, now: dt.datetime) -> CertRecord:
        """The inventory record of `device` if it is a valid device certificate of this CA.
        Raises SignRefusedError (not_a_device, device_revoked, device_expired)."""
        record = self.home.inventory.get(device.serial_number)
        network = network_of(device)
        if (record is None or record.kind != Kind.DEVICE or network is None
                or record.network_uuid != network or record.der != device.public_bytes(
                    Encoding.DER)):
            raise self._refused("not_a_device", "not a device certificate this CA issued", 403)
        if record.status_at(now) != "valid":
            raise self._refused(f"device_{record.status_at(now)}",
                                f"this device certificate is {record.status_at(now)}", 403)
        return record

    def _refused(self, reason: str, message: str, status: int = 400,
                 retry_after: int | None = None) -> SignRefusedError:
        self.count(f"refused_{reason}")
        return SignRefusedError(reason, message, status, retry_after)

    def _check_csr(self, data: bytes) -> x509.CertificateSigningRequest:
        try:
            csr = load_csr(data)
        except ForgedCSRError as exc:
            raise self._refused("csr_forged", str(exc)) from None
        except BadCSRError as exc:
            raise self._refused("csr_bad", str(exc)) from None
        for ext in csr.extensions:
            value = ext.value
            if isinstance(value, x509.BasicConstraints) and value.ca:
                raise self._refused("csr_profile", "the signer issues no CA certificates")
            if isinstance(value, x509.ExtendedKeyUsage) and any(
                    u != ExtendedKeyUsageOID.CLIENT_AUTH for u in value):
                raise self._refused("csr_profile", "the signer issues device (clientAuth)"
                                    " certificates only")
        return csr

    def _rate(self, buckets: _Buckets, key: str, now: dt.datetime, what: str) -> None:
        wait = buckets.take(key, now.timestamp())
        if wait > 0:
            raise self._refused(f"rate_{what}", f"too many requests for this {what}", 503,
                                retry_after=max(1, int(wait + 0.999)))

    def _build(self, csr: x509.CertificateSigningRequest, network: uuid.UUID,
               now: dt.datetime) -> x509.Certificate:
        return build_device(csr.public_key(), issuer=self.home.issuer,  # type: ignore[arg-type]
                            network=network, now=now, days=self.limits.device_days)

    def _record(self, conn, cert: x509.Certificate, network: uuid.UUID, now: dt.datetime,
                actor: str, action: str, details: dict[str, object]) -> None:
        self.home.inventory.add(conn, [CertRecord.of(cert, Kind.DEVICE, network, now)])
        event = audit.issued(cert, Kind.DEVICE, network, action)
        event.details.update(details)
        audit.append(conn, [event], actor=actor, at=now)
