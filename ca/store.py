"""The CA home on disk: keys, certificates, CRL, inventory, and the bundles it writes.

Layout of a home (see certs.example/README.md):
    root.crt  root.key  issuing.crt  issuing.key  ca-chain.pem  crl.pem  inventory.db
`root.key` may be moved offline after `init`: only `issuing.key` is needed to sign.

Durability rules: CA files are written atomically (temp file, fsync, rename, fsync folder);
`init` builds the whole home in a temp folder and renames it into place; device bundles are
staged in a hidden folder, synced once with syncfs(2), recorded in the inventory in one
transaction, then renamed into place, so a failure leaves no half-written bundle and no
unrecorded certificate. Every key file is created 0600.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from . import audit, crlpub, rotation
from . import crl as crl_mod
from .bundles import (
    BundleFactory,
    DeviceBundle,
    LeafFiles,
    SignedCert,
    Stager,
    bundles_from_rows,
    write_bundle,
)
from .csr import load_csr
from .errors import (
    AlreadyRevokedError,
    BadInputError,
    CAError,
    HomeExistsError,
    HomeInvalidError,
    HomeNotFoundError,
    NotFoundError,
    OutputError,
    PassphraseError,
)
from .files import (
    atomic_write,
    fsync_dir,
    fsync_tree,
    make_staging,
    prepare_out_dir,
    syncfs,
    write_new,
)
from .inventory import CertRecord, Inventory, describe, iso, parse_selector, serial_hex
from .keys import (
    KeyType,
    generate_key,
    is_encrypted_pem,
    load_private_key_pem,
    private_key_pem,
)
from .profiles import (
    LEAF_DAYS,
    Issuer,
    Kind,
    build_device,
    build_issuing,
    build_operator,
    build_root,
    build_server,
    check_days,
    check_utc,
    device_validity,
    network_of,
)

ROOT_CRT, ROOT_KEY = "root.crt", "root.key"
ISSUING_CRT, ISSUING_KEY = "issuing.crt", "issuing.key"
CHAIN_PEM, CRL_PEM, INVENTORY_DB = "ca-chain.pem", "crl.pem", "inventory.db"
BATCH = 5000  # bundles per staging/transaction round
_PEM = Encoding.PEM


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


class CAHome:
    """A CA home folder. Make one with `CAHome.init`, open one with `CAHome.open`."""

    def __init__(
        self, path: Path, root_cert: x509.Certificate, issuing_cert: x509.Certificate,
        inventory: Inventory, passphrase: bytes | None, actor: str | None = None,
        previous: tuple[x509.Certificate, ...] = (),
    ) -> None:
        self.path = path
        self.actor = actor or audit.default_actor()  # who the audit trail names
        self.root_cert = root_cert
        self.issuing_cert = issuing_cert
        self.previous_issuing = previous  # earlier issuing CAs (see ca.rotation)
        self.inventory = inventory
        self._passphrase = passphrase
        self._issuer: Issuer | None = None
        self._root_pem = root_cert.public_bytes(_PEM)
        self._issuing_pem = issuing_cert.public_bytes(_PEM)

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        path: os.PathLike[str] | str,
        *,
        name: str = "fleetgate",
        key_type: KeyType | str = KeyType.EC_P256,
        passphrase: bytes | None,
        now: dt.datetime | None = None,
    ) -> CAHome:
        """Create a new CA home at `path`: root, issuing CA, empty CRL, inventory.

        `passphrase=None` makes a dev CA with unencrypted keys. Raises HomeExistsError if
        `path` exists and is not an empty folder, OutputError if it cannot be created.
        """
        path = Path(path).absolute()
        now = check_utc(now or utcnow())
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise HomeExistsError(f"{path} already exists and is not empty: refusing to overwrite")
        if passphrase is not None and not passphrase:
            raise PassphraseError("the passphrase is empty")
        root_key = generate_key(key_type)
        root_cert = build_root(root_key, name=name, now=now)
        root = Issuer.of(root_cert, root_key)
        issuing_key = generate_key(key_type)
        issuing_cert = build_issuing(issuing_key.public_key(), root=root, name=name, now=now)
        issuer = Issuer.of(issuing_cert, issuing_key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = path.parent / f".{path.name}.init-{secrets.token_hex(4)}"
            staging.mkdir(mode=0o755)
        except OSError as exc:
            raise OutputError(f"cannot create {path}: {exc.strerror or exc}") from None
        try:
            write_new(staging / ROOT_KEY, private_key_pem(root_key, passphrase), 0o600)
            write_new(staging / ISSUING_KEY, private_key_pem(issuing_key, passphrase), 0o600)
            write_new(staging / ROOT_CRT, root_cert.public_bytes(_PEM))
            write_new(staging / ISSUING_CRT, issuing_cert.public_bytes(_PEM))
            write_new(
                staging / CHAIN_PEM, issuing_cert.public_bytes(_PEM) + root_cert.public_bytes(_PEM)
            )
            inv = Inventory.create(staging / INVENTORY_DB)
            try:
                with inv.transaction() as conn:
                    inv.add(conn, [CertRecord.of(root_cert, Kind.ROOT, None, now),
                                   CertRecord.of(issuing_cert, Kind.ISSUING, None, now)])
                    number = inv.next_crl_number(conn)
                    audit.append(conn, [audit.issued(root_cert, Kind.ROOT),
                                        audit.issued(issuing_cert, Kind.ISSUING),
                                        audit.crl_event(issuing_cert, number, 0)],
                                 actor=audit.default_actor(), at=now)
                crl = crl_mod.build_crl(issuer, [], now=now, number=number)
                write_new(staging / CRL_PEM, crl.public_bytes(_PEM))
            finally:
                inv.close()
            fsync_tree(staging)
            if path.exists():
                if any(path.iterdir()):  # someone raced us into it
                    raise HomeExistsError(f"{path} is not empty: refusing to overwrite")
                path.rmdir()
            os.rename(staging, path)
            fsync_dir(path.parent)
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(exc, OSError):
                raise OutputError(f"cannot create {path}: {exc.strerror or exc}") from None
            raise
        home = cls.open(path, passphrase=passphrase)
        home._issuer = issuer
        return home

    @classmethod
    def open(cls, path: os.PathLike[str] | str, *, passphrase: bytes | None = None,
             actor: str | None = None) -> CAHome:
        """Open an existing home. The passphrase is needed only to sign (see `unlock`);
        `actor` is who the audit trail names (default: the OS user).

        Raises HomeNotFoundError (nothing there), HomeInvalidError (foreign or damaged).
        """
        path = Path(path).absolute()
        if not path.is_dir():
            raise HomeNotFoundError(f"no CA home at {path} (run `fleet-ca init`, or give --home)")
        if not (path / INVENTORY_DB).exists() and not (path / ROOT_CRT).exists():
            if any(path.iterdir()):
                raise HomeInvalidError(f"{path} is not a fleet-ca home (no {INVENTORY_DB})")
            raise HomeNotFoundError(f"no CA home at {path} (run `fleet-ca init`, or give --home)")
        inventory = Inventory.open(path / INVENTORY_DB)
        try:
            rotation.recover(path, inventory)
            root_cert = rotation.load_cert(path / ROOT_CRT)
            issuing_cert = rotation.load_cert(path / ISSUING_CRT)
            previous = rotation.load_previous(path, root_cert)
        except BaseException:
            inventory.close()
            raise
        try:
            issuing_cert.verify_directly_issued_by(root_cert)
        except (ValueError, TypeError, InvalidSignature):
            inventory.close()
            raise HomeInvalidError(f"{path}: {ISSUING_CRT} is not signed by {ROOT_CRT}") from None
        return cls(path, root_cert, issuing_cert, inventory, passphrase, actor, previous)

    def close(self) -> None:
        self.inventory.close()

    def __enter__(self) -> CAHome:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the signing key -------------------------------------------------------------------

    @property
    def key_encrypted(self) -> bool:
        """True if the issuing key needs a passphrase."""
        try:
            return is_encrypted_pem((self.path / ISSUING_KEY).read_bytes()[:64])
        except OSError:
            return False

    def unlock(self, passphrase: bytes | None) -> None:
        """Set the passphrase and load the issuing key now. Raises PassphraseError."""
        self._passphrase = passphrase
        self._issuer = None
        _ = self.issuer

    @property
    def issuer(self) -> Issuer:
        """The issuing CA with its key, loaded once. Raises PassphraseError/HomeInvalidError."""
        if self._issuer is None:
            try:
                data = (self.path / ISSUING_KEY).read_bytes()
            except OSError as exc:
                raise HomeInvalidError(
                    f"cannot read {self.path / ISSUING_KEY}: {exc.strerror or exc}"
                ) from None
            try:
                key = load_private_key_pem(data, self._passphrase)
            except BadInputError:
                raise HomeInvalidError(f"{self.path / ISSUING_KEY} is damaged") from None
            if key.public_key() != self.issuing_cert.public_key():
                raise HomeInvalidError(f"{ISSUING_KEY} does not match {ISSUING_CRT}")
            self._issuer = Issuer.of(self.issuing_cert, key, crlpub.load_base(self.path))
        return self._issuer

    @property
    def root_pem(self) -> bytes:
        return self._root_pem

    @property
    def chain_pem(self) -> bytes:
        """The issuing CA then the root (what ca-chain.pem holds)."""
        return self._issuing_pem + self._root_pem

    # -- issuing ---------------------------------------------------------------------------

    def issue_devices(
        self,
        out_dir: os.PathLike[str] | str,
        *,
        count: int = 1,
        network: uuid.UUID | None = None,
        days: int = LEAF_DAYS,
        now: dt.datetime | None = None,
        p12: bool = False,
        p12_password: bytes | None = None,
        progress: Callable[[int], None] | None = None,
        workers: int | None = None,
        action: str = "issue",
    ) -> list[DeviceBundle]:
        """Generate `count` device key pairs and certificates; write OUT/<uuid>/ bundles.

        Each bundle: device.key (0600), device.crt (leaf + issuing), ca.crt (root),
        device.json, and device.p12 when `p12`. `network` (only with count=1) fixes the UUID;
        otherwise each is a fresh uuid4. `progress(n)` is called with bundles done so far.
        `workers` processes share large counts (default: the CPU count, up to 4, from
        1000 bundles on; 1 = in-process). `action` is the audit trail's verb.
        Raises BadInputError, OutputError (unwritable OUT, or OUT/<uuid> exists),
        PassphraseError.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise BadInputError(f"count must be a positive whole number, not {count!r}")
        if network is not None and count != 1:
            raise BadInputError("--network names one device: use it with --count 1")
        check_days(days)
        now = check_utc(now or utcnow())
        issuer = self.issuer
        out = prepare_out_dir(out_dir)
        if network is not None and (out / str(network)).exists():
            raise OutputError(f"{out / str(network)} already exists")
        not_before, not_after = device_validity(issuer, now, days)
        factory = BundleFactory.of(issuer, self.root_cert, now=now, not_before=not_before,
                                   not_after=not_after, p12=p12, p12_password=p12_password)
        done = [0]

        def advance(k: int) -> None:
            done[0] += k
            if progress:
                progress(done[0])

        bundles: list[DeviceBundle] = []
        with Stager(factory, total=count, workers=workers) as stager:
            for start in range(0, count, BATCH):
                n = min(BATCH, count - start)
                nets = [network] if network is not None else [uuid.uuid4() for _ in range(n)]
                bundles += self._issue_batch(out, stager, nets, advance, action, now)
        return bundles

    def _issue_batch(
        self,
        out: Path,
        stager: Stager,
        networks: Sequence[uuid.UUID],
        advance: Callable[[int], None],
        action: str,
        now: dt.datetime,
    ) -> list[DeviceBundle]:
        staging = make_staging(out)
        try:
            rows = stager.stage(str(staging), networks, advance)
            # Bundles durable before they are recorded, recorded before they are visible.
            syncfs(staging)
            with self.inventory.transaction() as conn:
                self.inventory.add_rows(conn, rows)
                audit.append(conn, (audit.Event(action, r[0], {"kind": r[1], "network": r[2]})
                                    for r in rows), actor=self.actor, at=now)
            for r in rows:
                os.rename(staging / r[2], out / r[2])
            fsync_dir(out)
            return bundles_from_rows(out, rows, p12=stager.factory.p12)
        except OSError as exc:
            raise OutputError(f"cannot write bundles in {out}: {exc.strerror or exc}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def sign_csr(
        self,
        csr_data: bytes,
        *,
        network: uuid.UUID | None = None,
        days: int = LEAF_DAYS,
        now: dt.datetime | None = None,
        out: os.PathLike[str] | str | None = None,
        action: str = "issue",
    ) -> SignedCert:
        """Issue the device profile for the key in a CSR (its subject and extensions are
        ignored). With `out`, the chain (leaf then issuing CA) is written there atomically,
        and the certificate is recorded only if that write succeeds. `action` is the audit
        trail's verb.

        Raises BadCSRError, ForgedCSRError, BadInputError, OutputError, PassphraseError.
        """
        csr = load_csr(csr_data)
        check_days(days)
        now = check_utc(now or utcnow())
        net = network or uuid.uuid4()
        cert = build_device(csr.public_key(), issuer=self.issuer, network=net, now=now,  # type: ignore[arg-type]
                            days=days)
        chain = cert.public_bytes(_PEM) + self._issuing_pem
        record = CertRecord.of(cert, Kind.DEVICE, net, now)
        if out is None:
            with self.inventory.transaction() as conn:
                self.inventory.add(conn, [record])
                audit.append(conn, [audit.issued(cert, Kind.DEVICE, net, action)],
                             actor=self.actor, at=now)
        else:
            out_path = Path(out).absolute()
            if out_path.is_dir():
                raise OutputError(f"{out_path} is a folder; give a file name")
            self.write_recorded(out_path.parent, {out_path.name: (chain, 0o644)}, record,
                                 overwrite=True, action=action)
        return SignedCert(net, cert.serial_number, cert, chain)

    def issue_server(
        self,
        out_dir: os.PathLike[str] | str,
        *,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        days: int = LEAF_DAYS,
        now: dt.datetime | None = None,
    ) -> LeafFiles:
        """Write OUT/server.crt (leaf + issuing) and OUT/server.key (0600)."""
        now = check_utc(now or utcnow())
        key = generate_key(KeyType.EC_P256)
        cert = build_server(key.public_key(), issuer=self.issuer, dns=dns, ips=ips, now=now,
                            days=days)
        out = prepare_out_dir(out_dir)
        files = {"server.key": (private_key_pem(key), 0o600),
                 "server.crt": (cert.public_bytes(_PEM) + self._issuing_pem, 0o644)}
        self.write_recorded(out, files, CertRecord.of(cert, Kind.SERVER, None, now))
        return LeafFiles(cert.serial_number, out / "server.crt", out / "server.key")

    def issue_operator(
        self,
        out_dir: os.PathLike[str] | str,
        *,
        name: str,
        days: int = LEAF_DAYS,
        now: dt.datetime | None = None,
    ) -> LeafFiles:
        """Write OUT/operator.crt (leaf + issuing), OUT/operator.key (0600), OUT/ca.crt."""
        now = check_utc(now or utcnow())
        key = generate_key(KeyType.EC_P256)
        cert = build_operator(key.public_key(), issuer=self.issuer, name=name, now=now, days=days)
        out = prepare_out_dir(out_dir)
        files = {"operator.key": (private_key_pem(key), 0o600),
                 "operator.crt": (cert.public_bytes(_PEM) + self._issuing_pem, 0o644),
                 "ca.crt": (self._root_pem, 0o644)}
        self.write_recorded(out, files, CertRecord.of(cert, Kind.OPERATOR, None, now))
        return LeafFiles(cert.serial_number, out / "operator.crt", out / "operator.key",
                         out / "ca.crt")

    def write_recorded(
        self, out: Path, files: dict[str, tuple[bytes, int]], record: CertRecord,
        *, overwrite: bool = False, action: str = "issue", details: dict | None = None,
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        """Write `files` into `out` and record the certificate (audit `details` added, `also`
        run in the same transaction): both or neither."""
        for fname in files:
            if (out / fname).exists() and not overwrite:
                raise OutputError(f"{out / fname} already exists: refusing to overwrite")
        if not out.is_dir():
            raise OutputError(f"output folder {out} does not exist")
        written: list[Path] = []
        try:
            with self.inventory.transaction() as conn:
                self.inventory.add(conn, [record])
                event = audit.issued(record.certificate(), record.kind, record.network_uuid,
                                     action)
                event.details.update(details or {})
                audit.append(conn, [event], actor=self.actor, at=record.issued_at)
                if also is not None:
                    also(conn)
                for fname, (data, mode) in files.items():
                    atomic_write(out / fname, data, mode)
                    written.append(out / fname)
        except BaseException as exc:
            for p in written:
                p.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise OutputError(f"cannot write in {out}: {exc.strerror or exc}") from None
            raise

    # -- revocation ------------------------------------------------------------------------

    def find(self, selector: str | int | uuid.UUID) -> list[CertRecord]:
        """Records named by a serial (int or hex text) or network UUID. Raises NotFoundError."""
        sel = parse_selector(selector) if isinstance(selector, str) else selector
        if isinstance(sel, uuid.UUID):
            records = self.inventory.by_network(sel)
            if not records:
                raise NotFoundError(f"no certificate for network {sel}")
            return records
        record = self.inventory.get(sel)
        if record is None:
            raise NotFoundError(f"no certificate with serial {serial_hex(sel)}")
        return [record]

    def revoke(
        self,
        selector: str | int | uuid.UUID,
        *,
        reason: str = "unspecified",
        now: dt.datetime | None = None,
    ) -> list[CertRecord]:
        """Revoke a certificate (serial) or all valid ones of a network (UUID); rewrite the
        CRL atomically. Returns the records revoked now.

        Raises NotFoundError, AlreadyRevokedError, BadInputError (a CA certificate),
        PassphraseError.
        """
        crl_mod.check_reason(reason)
        now = check_utc(now or utcnow())
        issuer = self.issuer
        records = self.find(selector)
        if any(r.kind in (Kind.ROOT, Kind.ISSUING) for r in records):
            raise BadInputError("CA certificates are not revoked by this CRL: make a new CA")
        todo = [r for r in records if r.status == "valid"]
        if not todo:
            raise AlreadyRevokedError(
                f"{describe(selector)} is already revoked"
                f" (at {iso(records[-1].revoked_at or now)}, reason {records[-1].reason})"
            )
        with self.inventory.transaction() as conn:
            self.inventory.mark_revoked(conn, [r.serial for r in todo], now, reason)
            audit.append(conn, (audit.Event("revoke", serial_hex(r.serial), {
                "kind": r.kind, "network": str(r.network_uuid) if r.network_uuid else None,
                "reason": reason}) for r in todo), actor=self.actor, at=now)
            self.write_crl_in(conn, issuer, now)
        return [self.inventory.get(r.serial) for r in todo]  # type: ignore[misc]

    def write_crl(self, now: dt.datetime | None = None) -> Path:
        """Regenerate crl.pem (fresh thisUpdate/nextUpdate, next CRL number)."""
        now = check_utc(now or utcnow())
        issuer = self.issuer
        with self.inventory.transaction() as conn:
            self.write_crl_in(conn, issuer, now)
        return self.path / CRL_PEM

    def write_crl_in(self, conn: sqlite3.Connection, issuer: Issuer, now: dt.datetime) -> None:
        """Rewrite crl.pem inside the write transaction `conn` (so concurrent revokers write
        their CRLs in turn, the last listing everything): one CRL per issuing CA still served,
        current first (see ca.rotation)."""
        issuers = [issuer, *rotation.previous_issuers(
            self.path, self.previous_issuing, self._passphrase, now)]
        entries = [(crl_mod.authority_key_id(r.der), crl_mod.RevokedEntry(
            r.serial, r.revoked_at or now, r.reason or "unspecified"))
            for r in self.inventory.revoked(conn)]
        crls = crl_mod.build_crls(issuers, entries, now=now,
                                  numbers=lambda: self.inventory.next_crl_number(conn))
        audit.append(conn, [audit.crl_event(i.cert, c.extensions.get_extension_for_class(
            x509.CRLNumber).value.crl_number, len(c)) for i, c in zip(issuers, crls, strict=True)],
            actor=self.actor, at=now)
        try:
            atomic_write(self.path / CRL_PEM, b"".join(c.public_bytes(_PEM) for c in crls))
        except OSError as exc:
            raise OutputError(f"cannot write {self.path / CRL_PEM}: {exc.strerror or exc}") \
                from None

    def load_crl(self) -> x509.CertificateRevocationList:
        """The current issuing CA's CRL (the first in crl.pem)."""
        return self.load_crls()[0]

    def load_crls(self) -> list[x509.CertificateRevocationList]:
        """Every CRL in crl.pem: one per issuing CA still served, current first."""
        try:
            data = (self.path / CRL_PEM).read_bytes()
            return [x509.load_pem_x509_crl(b"-----BEGIN X509 CRL-----" + part)
                    for part in data.split(b"-----BEGIN X509 CRL-----")[1:]]
        except (OSError, ValueError) as exc:
            raise HomeInvalidError(f"cannot read {self.path / CRL_PEM}: {exc}") from None

    def rotate_issuing(self, root_passphrase: bytes | None,
                       now: dt.datetime | None = None) -> x509.Certificate:
        """Put a new issuing CA, signed by the root, in charge (see ca.rotation); the old one
        keeps its CRL in crl.pem until it expires. Needs the issuing key unlocked too (its
        passphrase protects the new key). Raises PassphraseError, HomeInvalidError."""
        now = check_utc(now or utcnow())
        cert = rotation.rotate_issuing(
            self.path, self.inventory, current=self.issuer, root_passphrase=root_passphrase,
            issuing_passphrase=self._passphrase, actor=self.actor, now=now)
        self.previous_issuing = rotation.load_previous(self.path, self.root_cert)
        self.issuing_cert, self._issuing_pem, self._issuer = cert, cert.public_bytes(_PEM), None
        self.write_crl(now)
        return cert

    # -- renewal ---------------------------------------------------------------------------

    def renew(
        self,
        network: uuid.UUID,
        *,
        out_dir: os.PathLike[str] | str | None = None,
        csr_data: bytes | None = None,
        out_file: os.PathLike[str] | str | None = None,
        days: int = LEAF_DAYS,
        now: dt.datetime | None = None,
    ) -> DeviceBundle | SignedCert:
        """A new certificate for an existing network UUID: a fresh bundle in OUT/<uuid>/, or
        a certificate for the key in `csr_data` (its chain written to `out_file` if given).
        The old certificate stays valid (revoke it
        with reason superseded once the device has switched).

        Raises NotFoundError (unknown UUID), BadInputError (not a device, or all revoked).
        """
        records = [r for r in self.find(network) if r.kind == Kind.DEVICE]
        if not records:
            raise BadInputError(f"{network} is not a device's network UUID")
        if csr_data is not None:
            return self.sign_csr(csr_data, network=network, days=days, now=now, out=out_file,
                                 action="renew")
        if out_dir is None:
            raise BadInputError("renew needs an output folder or a CSR")
        return self.issue_devices(out_dir, count=1, network=network, days=days, now=now,
                                  action="renew")[0]


__all__ = ["CAHome", "CAError", "DeviceBundle", "LeafFiles", "SignedCert", "parse_selector",
           "utcnow", "write_bundle", "network_of"]
