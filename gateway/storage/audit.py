"""The gateway's tamper-evident audit trail: entries, their hash chain, and its check.

Theory of operation: every erasure, bar lift, control command and operator or owner action
(HTTP API and console) appends one entry to the store's `audit` table (SQLite migration 4),
through the writer like any other write (an erasure's entry in the erasure's own
transaction). The entry shape and the hash rule are the CA's (`ca/audit.py`), so one
description fits both trails (docs/security.md, "The audit trails"):

- an entry is (seq, at, actor, action, subject, details, prev_hash, hash); `seq` counts from
  1 without gaps, `at` is UTC as `YYYY-MM-DDTHH:MM:SSZ`, `details` is canonical JSON (sorted
  keys, no spaces, ASCII);
- `hash` is the SHA-256 (hex) of the compact JSON array
  `[seq, at, actor, action, subject, details, prev_hash]`, and `prev_hash` is the previous
  entry's `hash` (64 zeros for the first).

`entry_hash` is a twin of `ca.audit.entry_hash` (the gateway never imports the CA package);
tests/unit/test_audit_twins.py holds the two equal. Editing, inserting or deleting a row
breaks the chain at that row, and `check` names the first broken entry. The chain is
evidence, not a signature: whoever can rewrite the file can recompute every later hash, so
keep a copy of the latest hash off the host (`fleet-gateway audit show --json | tail -1`).

Entries carry identifiers only (network, value and device UUIDs, certificate serials,
operator names, console account ids): never readings, command values or IP addresses. The
erasure of a network deletes its data but not the entries that name it: the record that it
was erased stays.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .errors import StorageError

GENESIS = "0" * 64
ROW = tuple[int, str, str, str, str, str, str, str]  # as stored, in column order


class AuditBroken(StorageError):
    """The chain is broken at entry `seq` (`why` says how)."""

    def __init__(self, seq: int, why: str) -> None:
        super().__init__(f"audit trail broken at entry {seq}: {why}")
        self.seq, self.why = seq, why


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One act to record; the writer gives it its place in the chain and its hash."""

    action: str
    subject: str
    details: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """Events appended together, in one transaction, by one actor at one time."""

    actor: str
    at: datetime
    events: tuple[AuditEvent, ...]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One stored entry."""

    seq: int
    at: str
    actor: str
    action: str
    subject: str
    details: str  # canonical JSON, as hashed
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, object]:
        try:
            details = json.loads(self.details)
        except ValueError:
            details = {"unparseable": self.details}
        return {"seq": self.seq, "at": self.at, "actor": self.actor, "action": self.action,
                "subject": self.subject, "details": details, "prev_hash": self.prev_hash,
                "hash": self.hash}


def stamp(at: datetime) -> str:
    """An entry's time as stored (and hashed): UTC, whole seconds."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical(details: dict[str, object]) -> str:
    return json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def entry_hash(seq: int, at: str, actor: str, action: str, subject: str, details: str,
               prev_hash: str) -> str:
    """SHA-256 (hex) of the compact JSON array of an entry's fields, as stored. The twin of
    `ca.audit.entry_hash`: change neither without the other."""
    body = json.dumps([seq, at, actor, action, subject, details, prev_hash],
                      separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(body.encode()).hexdigest()


def chain(record: AuditRecord, last: tuple[int, str] | None) -> list[ROW]:
    """The rows that append `record` after the entry `last` ((seq, hash); None: empty)."""
    seq, prev = last if last is not None else (0, GENESIS)
    when = stamp(record.at)
    rows: list[ROW] = []
    for ev in record.events:
        seq += 1
        details = canonical(ev.details)
        digest = entry_hash(seq, when, record.actor, ev.action, ev.subject, details, prev)
        rows.append((seq, when, record.actor, ev.action, ev.subject, details, prev, digest))
        prev = digest
    return rows


def check(rows: Iterable[tuple]) -> int:
    """Walk stored rows in seq order; return how many there are.

    Raises:
        AuditBroken: naming the first entry whose seq, prev_hash or hash is wrong.
    """
    want, prev = 1, GENESIS
    for row in rows:
        seq, prev_hash, digest = row[0], row[6], row[7]
        if seq != want:
            raise AuditBroken(seq, f"entry {want} is missing (next is {seq})")
        if prev_hash != prev:
            raise AuditBroken(seq, "its prev_hash is not the previous entry's hash")
        try:
            ok = entry_hash(*row[:7]) == digest
        except TypeError:  # a column edited to a value JSON cannot hold
            ok = False
        if not ok:
            raise AuditBroken(seq, "its contents do not match its hash")
        want, prev = seq + 1, digest
    return want - 1
