"""The inventory: every certificate the CA issued, in SQLite, with numbered migrations.

Theory of operation: one SQLite file (`inventory.db`) in the CA home, marked with our
`PRAGMA application_id` so a foreign database is recognised, and versioned with
`PRAGMA user_version` = the number of migrations applied. Writers take the write lock up
front (`BEGIN IMMEDIATE`) and wait for each other (busy timeout), so two `fleet-ca` processes
issuing at once serialise their commits instead of failing or corrupting; the serial is the
PRIMARY KEY, so a reused serial fails the transaction rather than being recorded twice.
Times are stored as ISO 8601 UTC text ('2026-01-02T03:04:05Z'), which sorts as time.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from .errors import BadInputError, HomeInvalidError, InventoryError

APPLICATION_ID = 0x666C6774  # 'flgt'
BUSY_TIMEOUT_S = 60.0

# Migration N (1-based) brings user_version from N-1 to N. Append; never edit a released one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE certificates (
        serial       TEXT PRIMARY KEY,   -- lowercase hex, no leading zeros
        kind         TEXT NOT NULL CHECK (kind IN ('root','issuing','device','server','operator')),
        network_uuid TEXT,               -- devices only
        subject      TEXT NOT NULL,      -- RFC 4514
        fingerprint  TEXT NOT NULL,      -- SHA-256 of the DER, lowercase hex
        not_before   TEXT NOT NULL,
        not_after    TEXT NOT NULL,
        issued_at    TEXT NOT NULL,
        status       TEXT NOT NULL DEFAULT 'valid' CHECK (status IN ('valid','revoked')),
        revoked_at   TEXT,
        reason       TEXT,
        der          BLOB NOT NULL
    );
    CREATE INDEX certificates_network ON certificates (network_uuid);
    CREATE INDEX certificates_not_after ON certificates (not_after);
    INSERT INTO meta (key, value) VALUES ('crl_number', '0');
    """,
    # 2: the audit trail's hash chain (see ca.audit); claim and registrar kinds (SQLite
    # cannot change a CHECK: the table is rebuilt), claims with their use counts, and the
    # renewed certificates waiting to be revoked as superseded.
    """
    CREATE TABLE audit (
        seq       INTEGER PRIMARY KEY,   -- 1, 2, 3 ... with no gaps
        at        TEXT NOT NULL,         -- ISO 8601 UTC
        actor     TEXT NOT NULL,         -- who: an OS user, 'signer', an operator name
        action    TEXT NOT NULL,         -- issue, renew, revoke, crl, ...
        subject   TEXT NOT NULL,         -- what: a serial (hex), a network UUID, an issuer
        details   TEXT NOT NULL,         -- canonical JSON object
        prev_hash TEXT NOT NULL,
        hash      TEXT NOT NULL
    );
    CREATE TABLE certificates2 (
        serial       TEXT PRIMARY KEY,
        kind         TEXT NOT NULL CHECK (kind IN ('root','issuing','device','server','operator',
                                                   'claim','registrar')),
        network_uuid TEXT,
        subject      TEXT NOT NULL,
        fingerprint  TEXT NOT NULL,
        not_before   TEXT NOT NULL,
        not_after    TEXT NOT NULL,
        issued_at    TEXT NOT NULL,
        status       TEXT NOT NULL DEFAULT 'valid' CHECK (status IN ('valid','revoked')),
        revoked_at   TEXT,
        reason       TEXT,
        der          BLOB NOT NULL
    );
    INSERT INTO certificates2 SELECT * FROM certificates;
    DROP TABLE certificates;
    ALTER TABLE certificates2 RENAME TO certificates;
    CREATE INDEX certificates_network ON certificates (network_uuid);
    CREATE INDEX certificates_not_after ON certificates (not_after);
    CREATE TABLE claims (                -- see ca.claims
        serial     TEXT PRIMARY KEY REFERENCES certificates (serial),
        batch      TEXT NOT NULL,
        uses_total INTEGER NOT NULL,
        uses_left  INTEGER NOT NULL CHECK (uses_left >= 0)
    );
    CREATE TABLE supersede (             -- renewed certificates to revoke at `due` (ca.signer)
        serial TEXT PRIMARY KEY REFERENCES certificates (serial),
        due    TEXT NOT NULL
    );
    CREATE INDEX supersede_due ON supersede (due);
    """,
)


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_iso(s: str) -> dt.datetime:
    return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True, slots=True)
class CertRecord:
    """One row of the inventory."""

    serial: int
    kind: str
    network_uuid: uuid.UUID | None
    subject: str
    fingerprint: str
    not_before: dt.datetime
    not_after: dt.datetime
    issued_at: dt.datetime
    status: str  # 'valid' or 'revoked' as stored; see `status_at` for 'expired'
    revoked_at: dt.datetime | None = None
    reason: str | None = None
    der: bytes = b""

    @classmethod
    def of(
        cls, cert: x509.Certificate, kind: str, network: uuid.UUID | None, now: dt.datetime
    ) -> CertRecord:
        return cls(
            serial=cert.serial_number,
            kind=kind,
            network_uuid=network,
            subject=cert.subject.rfc4514_string(),
            fingerprint=fingerprint(cert),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            issued_at=now,
            status="valid",
            der=cert.public_bytes(_DER),
        )

    def status_at(self, now: dt.datetime) -> str:
        """'revoked', 'expired' (past not_after) or 'valid'."""
        if self.status == "revoked":
            return "revoked"
        return "expired" if now > self.not_after else "valid"

    def to_json(self, now: dt.datetime) -> dict[str, object]:
        return {
            "serial": serial_hex(self.serial),
            "kind": self.kind,
            "uuid": str(self.network_uuid) if self.network_uuid else None,
            "subject": self.subject,
            "fingerprint": self.fingerprint,
            "not_before": iso(self.not_before),
            "not_after": iso(self.not_after),
            "issued_at": iso(self.issued_at),
            "status": self.status_at(now),
            "revoked_at": iso(self.revoked_at) if self.revoked_at else None,
            "reason": self.reason,
        }

    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)


_DER = Encoding.DER
_COLUMNS = (
    "serial, kind, network_uuid, subject, fingerprint, not_before, not_after, issued_at,"
    " status, revoked_at, reason, der"
)


def _row_to_record(row: tuple) -> CertRecord:
    return CertRecord(
        serial=int(row[0], 16),
        kind=row[1],
        network_uuid=uuid.UUID(row[2]) if row[2] else None,
        subject=row[3],
        fingerprint=row[4],
        not_before=from_iso(row[5]),
        not_after=from_iso(row[6]),
        issued_at=from_iso(row[7]),
        status=row[8],
        revoked_at=from_iso(row[9]) if row[9] else None,
        reason=row[10],
        der=row[11],
    )


def _record_to_row(r: CertRecord) -> tuple:
    return (
        serial_hex(r.serial),
        r.kind,
        str(r.network_uuid) if r.network_uuid else None,
        r.subject,
        r.fingerprint,
        iso(r.not_before),
        iso(r.not_after),
        iso(r.issued_at),
        r.status,
        iso(r.revoked_at) if r.revoked_at else None,
        r.reason,
        r.der,
    )


class Inventory:
    """The SQLite inventory. Use `create` in a fresh home, `open` in an existing one."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @classmethod
    def create(cls, path: Path) -> Inventory:
        """A new inventory at `path` (which must not exist), fully migrated."""
        if path.exists():
            raise FileExistsError(path)
        conn = cls._connect(path)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        inv = cls(conn, path)
        inv._migrate()
        return inv

    @classmethod
    def open(cls, path: Path) -> Inventory:
        """Open and migrate forward. Raises HomeInvalidError for a foreign or newer file."""
        if not path.is_file():
            raise HomeInvalidError(f"{path.parent} has no inventory ({path.name} is missing)")
        try:
            conn = cls._connect(path)
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        except sqlite3.OperationalError as exc:  # locked, unreadable: not a foreign file
            raise InventoryError(f"cannot read {path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise HomeInvalidError(f"{path} is not a fleet-ca inventory ({exc})") from None
        if app_id != APPLICATION_ID:
            conn.close()
            raise HomeInvalidError(f"{path} is not a fleet-ca inventory (foreign database)")
        inv = cls(conn, path)
        inv._migrate()
        return inv

    def close(self) -> None:
        self._conn.close()

    def _migrate(self) -> None:
        if self.schema_version == len(MIGRATIONS):
            return  # the common case: no write lock needed just to open
        with self.transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise HomeInvalidError(
                    f"{self.path} is at schema {version}, newer than this fleet-ca knows "
                    f"({len(MIGRATIONS)}): upgrade fleet-ca"
                )
            for number in range(version + 1, len(MIGRATIONS) + 1):
                for statement in MIGRATIONS[number - 1].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection, for reads by sibling modules (`ca.audit`); write in `transaction`."""
        return self._conn

    @property
    def schema_version(self) -> int:
        return self._conn.execute("PRAGMA user_version").fetchone()[0]

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE (take the write lock now, waiting for other writers) ... COMMIT."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def add(self, conn: sqlite3.Connection, records: Iterable[CertRecord]) -> None:
        """Insert records (inside `transaction()`); a duplicate serial raises IntegrityError."""
        conn.executemany(
            f"INSERT INTO certificates ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (_record_to_row(r) for r in records),
        )

    def add_rows(self, conn: sqlite3.Connection, rows: Iterable[tuple]) -> None:
        """Insert raw rows in `_COLUMNS` order (the bulk path of device bundles)."""
        conn.executemany(
            f"INSERT INTO certificates ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows
        )

    def get(self, serial: int) -> CertRecord | None:
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM certificates WHERE serial = ?", (serial_hex(serial),)
        ).fetchone()
        return _row_to_record(row) if row else None

    def by_network(self, network: uuid.UUID) -> list[CertRecord]:
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM certificates WHERE network_uuid = ? ORDER BY issued_at",
            (str(network),),
        ).fetchall()
        return [_row_to_record(r) for r in rows]

    def mark_revoked(
        self, conn: sqlite3.Connection, serials: Iterable[int], at: dt.datetime, reason: str
    ) -> None:
        conn.executemany(
            "UPDATE certificates SET status = 'revoked', revoked_at = ?, reason = ?"
            " WHERE serial = ? AND status = 'valid'",
            [(iso(at), reason, serial_hex(s)) for s in serials],
        )

    def revoked(self, conn: sqlite3.Connection | None = None) -> list[CertRecord]:
        c = conn or self._conn
        rows = c.execute(
            f"SELECT {_COLUMNS} FROM certificates WHERE status = 'revoked' ORDER BY revoked_at"
        ).fetchall()
        return [_row_to_record(r) for r in rows]

    def next_crl_number(self, conn: sqlite3.Connection) -> int:
        n = int(conn.execute("SELECT value FROM meta WHERE key = 'crl_number'").fetchone()[0]) + 1
        conn.execute("UPDATE meta SET value = ? WHERE key = 'crl_number'", (str(n),))
        return n

    def select(
        self,
        *,
        now: dt.datetime,
        kind: str | None = None,
        status: str | None = None,
        expiring_within: dt.timedelta | None = None,
    ) -> list[CertRecord]:
        """Records filtered by kind, status ('valid', 'revoked', 'expired') and by
        not_after falling within `expiring_within` of `now` (and not yet past)."""
        where, args = [], []
        if kind:
            where.append("kind = ?")
            args.append(kind)
        if status == "revoked":
            where.append("status = 'revoked'")
        elif status == "expired":
            where.append("status = 'valid' AND not_after < ?")
            args.append(iso(now))
        elif status == "valid":
            where.append("status = 'valid' AND not_after >= ?")
            args.append(iso(now))
        if expiring_within is not None:
            where.append("not_after >= ? AND not_after <= ?")
            args += [iso(now), iso(now + expiring_within)]
        sql = f"SELECT {_COLUMNS} FROM certificates"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY issued_at, serial"
        return [_row_to_record(r) for r in self._conn.execute(sql, args).fetchall()]

    def count(self) -> int:
        return self._conn.execute("SELECT count(*) FROM certificates").fetchone()[0]


def parse_selector(text: str) -> uuid.UUID | int:
    """'SERIAL|UUID' from the command line: a canonical UUID (or urn:uuid:...), else a hex
    serial (colons, '0x' and case ignored). Raises BadInputError."""
    t = text.strip()
    if t.lower().startswith("urn:uuid:"):
        t = t[9:]
    if len(t) == 36 and t.count("-") == 4:
        try:
            return uuid.UUID(t)
        except ValueError:
            pass
    h = t.replace(":", "").lower().removeprefix("0x")
    try:
        value = int(h, 16)
    except ValueError:
        raise BadInputError(f"{text!r} is neither a network UUID nor a hex serial") from None
    if value <= 0 or h.startswith("-") or h.startswith("+"):
        raise BadInputError(f"{text!r} is not a valid serial")
    return value


def describe(selector: object) -> str:
    if isinstance(selector, int):
        return f"serial {serial_hex(selector)}"
    return str(selector)
