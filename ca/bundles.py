"""Device bundles: the production-line fast path of `CAHome.issue_devices`.

Theory of operation: for a batch of network UUIDs, generate each P-256 key, sign its
certificate from one shared `device_template`, and write OUT/.staging-*/<uuid>/ with
device.key (0600), device.crt (leaf + issuing), ca.crt (root), device.json (and device.p12).
Each certificate carries SHA-256 of the bundle's one-time owner code (device.json only).
Staging writes are not fsynced one by one; the store syncs the file system once per batch
(syncfs), records the batch in one transaction, then renames each folder into place.

Large batches are split over worker processes (fork: they inherit the loaded issuing key,
which never crosses a pipe); each returns inventory rows, the parent alone writes SQLite.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import multiprocessing
import os
import secrets
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    pkcs12,
)

from .errors import OutputError
from .fastsign import FastDeviceSigner, pem_certificate, random_serial
from .files import prepare_out_dir
from .inventory import from_iso, iso, serial_hex
from .keys import KeyType, PrivateKey, generate_key, private_key_pem
from .profiles import Issuer, Kind, device_template, finish_device, network_of

_PEM, _DER = Encoding.PEM, Encoding.DER
CHUNK = 100  # bundles per worker task
PARALLEL_MIN = 1000  # below this, worker start-up costs more than it saves


@dataclass(frozen=True, slots=True)
class DeviceBundle:
    """One device's bundle folder `dir` = OUT/<network-uuid>/ and what is in it."""

    network_uuid: uuid.UUID
    serial: int
    dir: Path
    fingerprint: str  # SHA-256 of the certificate's DER, lowercase hex
    not_after: dt.datetime
    has_p12: bool = False

    @property
    def cert_path(self) -> Path:
        """device.crt: the leaf, then the issuing CA."""
        return self.dir / "device.crt"

    @property
    def key_path(self) -> Path:
        """device.key: PKCS#8 PEM, mode 0600."""
        return self.dir / "device.key"

    @property
    def ca_path(self) -> Path:
        """ca.crt: the root, to verify the gateway."""
        return self.dir / "ca.crt"

    @property
    def json_path(self) -> Path:
        """device.json: uuid, serial, fingerprint, not_before, not_after."""
        return self.dir / "device.json"

    @property
    def p12_path(self) -> Path | None:
        return self.dir / "device.p12" if self.has_p12 else None


def device_json(net: str, serial: int, fp: str, nb: str, na: str,
                owner_code: str | None = None) -> bytes:
    owner = f',\n  "owner_code": "{owner_code}"' if owner_code is not None else ""
    return (
        f'{{\n  "uuid": "{net}",\n  "serial": "{serial_hex(serial)}",\n'
        f'  "fingerprint": "{fp}",\n  "not_before": "{nb}",\n  "not_after": "{na}"'
        f'{owner}\n}}\n'
    ).encode()


def new_owner_code() -> tuple[str, bytes]:
    """A one-time owner code (128 random bits, as 8 groups of 4 hex digits) and the SHA-256
    the certificate carries: SHA-256 of the 32 hex digits, lower-case, without dashes. Only
    device.json holds the code; the CA keeps nothing of it, the gateway only the hash."""
    raw = secrets.token_hex(16)
    return "-".join(raw[i:i + 4] for i in range(0, 32, 4)), hashlib.sha256(raw.encode()).digest()


def _write(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        if mode == 0o600:
            os.fchmod(fd, mode)  # a umask can only narrow; make the key mode exact anyway
        os.write(fd, data)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class BundleFactory:
    """Everything a batch shares; `stage` writes bundles and returns inventory rows."""

    issuer: Issuer
    template: x509.CertificateBuilder
    fast: FastDeviceSigner | None
    issuing_pem: bytes
    root_pem: bytes
    issued_at: str
    not_before: dt.datetime
    not_after: dt.datetime
    p12: bool = False
    p12_password: bytes | None = None

    @classmethod
    def of(
        cls,
        issuer: Issuer,
        root: x509.Certificate,
        *,
        now: dt.datetime,
        not_before: dt.datetime,
        not_after: dt.datetime,
        p12: bool = False,
        p12_password: bytes | None = None,
    ) -> BundleFactory:
        try:
            fast: FastDeviceSigner | None = FastDeviceSigner(issuer, not_before, not_after)
        except (TypeError, ValueError):  # an issuer key type without a fast path
            fast = None
        return cls(
            issuer=issuer,
            template=device_template(issuer, not_before, not_after),
            fast=fast,
            issuing_pem=issuer.cert.public_bytes(_PEM),
            root_pem=root.public_bytes(_PEM),
            issued_at=iso(now),
            not_before=not_before,
            not_after=not_after,
            p12=p12,
            p12_password=p12_password,
        )

    def stage(self, staging: str, networks: Sequence[uuid.UUID]) -> list[tuple]:
        """Write one bundle per network into `staging`/<uuid>/; return inventory rows
        (the column order of `Inventory.add_rows`)."""
        rows = []
        nb, na = iso(self.not_before), iso(self.not_after)
        key_sign, template, fast = self.issuer.key, self.template, self.fast
        for net in networks:
            key = generate_key(KeyType.EC_P256)
            serial = random_serial()
            owner_code, owner_hash = new_owner_code()
            if fast is not None:
                der = fast.sign(key.public_key(), net, serial,  # type: ignore[arg-type]
                                owner_hash)
                cert_pem = pem_certificate(der)
            else:
                c = finish_device(template, key_sign, key.public_key(), net, serial, owner_hash)
                der, cert_pem = c.public_bytes(_DER), c.public_bytes(_PEM)
            fp = hashlib.sha256(der).hexdigest()
            name = str(net)
            d = f"{staging}/{name}"
            os.mkdir(d, 0o700)
            _write(d + "/device.key", private_key_pem(key), 0o600)
            _write(d + "/device.crt", cert_pem + self.issuing_pem, 0o644)
            _write(d + "/ca.crt", self.root_pem, 0o644)
            _write(d + "/device.json", device_json(name, serial, fp, nb, na, owner_code), 0o644)
            if self.p12:
                enc = (
                    BestAvailableEncryption(self.p12_password)
                    if self.p12_password
                    else NoEncryption()
                )
                blob = pkcs12.serialize_key_and_certificates(
                    name.encode(), key, x509.load_der_x509_certificate(der),
                    [self.issuer.cert], enc,
                )
                _write(d + "/device.p12", blob, 0o600)
            rows.append((
                serial_hex(serial), Kind.DEVICE, name, f"CN={name}", fp, nb, na,
                self.issued_at, "valid", None, None, der,
            ))
        return rows


# The factory a forked worker inherited from its parent (set just before the fork).
_WORKER_FACTORY: BundleFactory | None = None


def _stage_chunk(job: tuple[str, list[uuid.UUID]]) -> list[tuple]:
    assert _WORKER_FACTORY is not None
    return _WORKER_FACTORY.stage(*job)


class Stager:
    """Stages batches in-process, or over `workers` forked processes. A context manager."""

    def __init__(self, factory: BundleFactory, *, total: int, workers: int | None = None):
        global _WORKER_FACTORY
        self.factory = factory
        if workers is None:
            workers = min(os.cpu_count() or 1, 4) if total >= PARALLEL_MIN else 1
        self._pool = None
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            # Kept set while the pool lives: a worker the pool re-forks inherits it too.
            _WORKER_FACTORY = factory
            self._pool = multiprocessing.get_context("fork").Pool(workers)

    def stage(
        self, staging: str, networks: Sequence[uuid.UUID], progress: Callable[[int], None]
    ) -> list[tuple]:
        """Stage `networks`; call `progress(k)` after every k bundles staged."""
        if self._pool is None:
            rows: list[tuple] = []
            for chunk in _chunks(networks, CHUNK):
                rows += self.factory.stage(staging, chunk)
                progress(len(chunk))
            return rows
        rows = []
        for part in self._pool.imap_unordered(
            _stage_chunk, ((staging, c) for c in _chunks(networks, CHUNK))
        ):
            rows += part
            progress(len(part))
        return rows

    def __enter__(self) -> Stager:
        return self

    def __exit__(self, *exc: object) -> None:
        global _WORKER_FACTORY
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            _WORKER_FACTORY = None


def _chunks(items: Sequence[uuid.UUID], n: int) -> Iterator[list[uuid.UUID]]:
    for i in range(0, len(items), n):
        yield list(items[i : i + n])


def bundles_from_rows(out: Path, rows: Iterable[tuple], *, p12: bool) -> list[DeviceBundle]:
    parsed: dict[str, dt.datetime] = {}  # a batch shares one not_after: parse it once
    bundles = []
    for r in rows:
        na = parsed.get(r[6])
        if na is None:
            na = parsed[r[6]] = from_iso(r[6])
        bundles.append(DeviceBundle(network_uuid=uuid.UUID(r[2]), serial=int(r[0], 16),
                                    dir=out / r[2], fingerprint=r[4], not_after=na,
                                    has_p12=p12))
    return bundles


def write_bundle(
    out_dir: os.PathLike[str] | str,
    *,
    key: PrivateKey,
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate] = (),
    ca_cert: x509.Certificate,
) -> DeviceBundle:
    """Write a device-shaped bundle OUT/<uuid>/ for any certificate, recording nothing.

    For tests that need odd certificates on disk (expired, self-signed, from another CA):
    the files look exactly like `issue_devices` output. The UUID is the certificate's SAN
    `urn:uuid:` (a fresh one if it names none). Raises OutputError.
    """
    out = prepare_out_dir(out_dir)
    net = network_of(cert) or uuid.uuid4()
    d = out / str(net)
    try:
        d.mkdir(mode=0o700)
        _write(str(d / "device.key"), private_key_pem(key), 0o600)
        chain_pem = b"".join(c.public_bytes(_PEM) for c in (cert, *chain))
        _write(str(d / "device.crt"), chain_pem, 0o644)
        _write(str(d / "ca.crt"), ca_cert.public_bytes(_PEM), 0o644)
        fp = hashlib.sha256(cert.public_bytes(_DER)).hexdigest()
        info = device_json(str(net), cert.serial_number, fp, iso(cert.not_valid_before_utc),
                           iso(cert.not_valid_after_utc))
        _write(str(d / "device.json"), info, 0o644)
    except OSError as exc:
        raise OutputError(f"cannot write {d}: {exc.strerror or exc}") from None
    return DeviceBundle(
        network_uuid=net, serial=cert.serial_number, dir=d, fingerprint=fp,
        not_after=cert.not_valid_after_utc,
    )


@dataclass(frozen=True, slots=True)
class LeafFiles:
    """A server or operator certificate written to disk (`ca_path` only for operators)."""

    serial: int
    cert_path: Path
    key_path: Path
    ca_path: Path | None = None


@dataclass(frozen=True, slots=True)
class SignedCert:
    """A certificate issued from a CSR: the device keeps its key, it gets `chain_pem`."""

    network_uuid: uuid.UUID
    serial: int
    cert: x509.Certificate
    chain_pem: bytes  # leaf then issuing CA
