"""The CA's tamper-evident audit trail: a hash chain of entries in the inventory.

Theory of operation: every act of the CA (issue, renew, revoke, CRL) appends one entry to the
`audit` table (inventory migration 2) in the same transaction as the act itself, so an act
is recorded if and only if it happened. An entry is (seq, at, actor, action, subject,
details, prev_hash, hash), where `hash` is the SHA-256 of the canonical JSON of every other
field and `prev_hash` is the previous entry's `hash` (64 zeros for the first). Appends run
under the inventory's write lock (BEGIN IMMEDIATE), so two writers never chain onto the same
predecessor.

Editing, inserting or deleting a row breaks the chain at that row (its hash no longer matches
its fields, or the next entry's prev_hash no longer matches it, or a seq is missing);
`verify` walks the chain once, in seq order, and names the first broken entry. This detects
tampering by anyone who cannot also recompute every later hash, i.e. it is evidence, not a
signature: keep copies of the latest hash (`fleet-ca audit --json | tail -1`) off the host to
anchor it. Entries carry identifiers (serials, network UUIDs, names), never keys.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from cryptography import x509

from .errors import AuditBrokenError
from .inventory import from_iso, iso, serial_hex

GENESIS = "0" * 64

@dataclass(frozen=True, slots=True)
class Event:
    """One act to record; `append` gives it its place and hashes."""

    action: str
    subject: str
    details: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One stored entry of the chain."""

    seq: int
    at: dt.datetime
    actor: str
    action: str
    subject: str
    details: dict[str, object]
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, object]:
        return {"seq": self.seq, "at": iso(self.at), "actor": self.actor,
                "action": self.action, "subject": self.subject, "details": self.details,
                "prev_hash": self.prev_hash, "hash": self.hash}


def default_actor() -> str:
    """The OS user running this process ('unknown' if it has no name)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def issued(cert: x509.Certificate, kind: str, network: uuid.UUID | None = None,
           action: str = "issue") -> Event:
    """The event of issuing `cert` (subject: its serial)."""
    return Event(action, serial_hex(cert.serial_number), {
        "kind": kind, "network": str(network) if network else None,
        "issuer_key_id": _issuer_key_id(cert),
        "not_after": iso(cert.not_valid_after_utc)})


def crl_event(issuer: x509.Certificate, number: int, revoked: int) -> Event:
    """The event of publishing CRL `number` of `issuer` (subject: the issuer's serial)."""
    return Event("crl", serial_hex(issuer.serial_number), {"number": number, "revoked": revoked})


def _issuer_key_id(cert: x509.Certificate) -> str | None:
    # The AKI names the issuing CA's key: with rotation, it tells which issuing CA signed.
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None  # the self-signed root
    return aki.key_identifier.hex() if aki.key_identifier else None


def _canonical(details: dict[str, object]) -> str:
    return json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def entry_hash(seq: int, at: str, actor: str, action: str, subject: str, details: str,
               prev_hash: str) -> str:
    """SHA-256 (hex) over the canonical JSON array of an entry's fields, as stored."""
    body = json.dumps([seq, at, actor, action, subject, details, prev_hash],
                      separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(body.encode()).hexdigest()


def append(conn: sqlite3.Connection, events: Iterable[Event], *, actor: str,
           at: dt.datetime) -> int:
    """Chain `events` onto the trail, inside the caller's write transaction (the act and its
    record commit together). Returns the number appended."""
    last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (last[0], last[1]) if last else (0, GENESIS)
    when = iso(at)
    rows = []
    for ev in events:
        seq += 1
        details = _canonical(ev.details)
        h = entry_hash(seq, when, actor, ev.action, ev.subject, details, prev)
        rows.append((seq, when, actor, ev.action, ev.subject, details, prev, h))
        prev = h
    conn.executemany("INSERT INTO audit (seq, at, actor, action, subject, details, prev_hash,"
                     " hash) VALUES (?,?,?,?,?,?,?,?)", rows)
    return len(rows)


_SELECT = "SELECT seq, at, actor, action, subject, details, prev_hash, hash FROM audit"


def entries(conn: sqlite3.Connection, *, since: dt.datetime | None = None
            ) -> Iterator[AuditEntry]:
    """Stored entries in chain order (from `since` on, if given). Does not verify."""
    cur = (conn.execute(_SELECT + " WHERE at >= ? ORDER BY seq", (iso(since),)) if since
           else conn.execute(_SELECT + " ORDER BY seq"))
    for seq, at, actor, action, subject, details, prev, h in cur:
        try:
            parsed = json.loads(details)
        except ValueError:
            parsed = {"unparseable": details}
        yield AuditEntry(seq, from_iso(at), actor, action, subject, parsed, prev, h)


def verify(conn: sqlite3.Connection) -> int:
    """Walk the whole chain. Returns the number of entries.

    Raises AuditBrokenError naming the first entry whose seq, prev_hash or hash is wrong.
    """
    expected_seq, prev = 1, GENESIS
    for row in conn.execute("SELECT seq, at, actor, action, subject, details, prev_hash, hash"
                            " FROM audit ORDER BY seq"):
        seq, at, actor, action, subject, details, prev_hash, h = row
        if seq != expected_seq:
            raise AuditBrokenError(seq, f"entry {expected_seq} is missing (next is {seq})")
        if prev_hash != prev:
            raise AuditBrokenError(seq, "its prev_hash is not the previous entry's hash")
        try:
            ok = entry_hash(seq, at, actor, action, subject, details, prev_hash) == h
        except TypeError:  # a column edited to a non-text value
            ok = False
        if not ok:
            raise AuditBrokenError(seq, "its contents do not match its hash")
        expected_seq, prev = seq + 1, h
    return expected_seq - 1
