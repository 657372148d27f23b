"""Issuing-CA rotation under the same root, and the earlier issuing CAs a home keeps.

Theory of operation: the home's `issuing.crt`/`issuing.key` are always the *current* issuing
CA, the one that signs new certificates. Rotation (`rotate_issuing`) unlocks the root key
(only for this), makes a new issuing CA whose CN carries its generation ("<name> Issuing CA
2": CRLs are matched to certificates by issuer name, so each issuing CA needs its own), and
moves the old one to `previous-issuing/<serial>.crt|.key`. Certificates of a previous issuing
CA stay valid until they expire: the home keeps signing a CRL for it (crl.pem holds one CRL
per issuing CA, each signed by its own issuer) until the previous CA itself expires, after
which nothing it issued can be valid and it is left out (retired). ca-chain.pem lists every
issuing CA still served, then the root.

Crash safety: the new CA's files are written as `issuing.next.crt|.key` (fsynced), then the
new certificate is recorded in the inventory (with its audit entry) and committed, then the
two files are renamed over the current ones. `recover` (run by every `CAHome.open`) finishes
a rotation that was recorded but not fully renamed, and discards one that was never recorded,
so a crash at any point leaves either the old CA or the new one in charge, never a mix.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from . import audit
from .errors import HomeInvalidError, OutputError
from .files import atomic_write, fsync_dir
from .inventory import CertRecord, Inventory, serial_hex
from .keys import generate_key, key_type_of, load_private_key_pem, private_key_pem
from .profiles import Issuer, Kind, build_issuing, check_utc

PREVIOUS_DIR = "previous-issuing"
NEXT_CRT, NEXT_KEY = "issuing.next.crt", "issuing.next.key"
ROOT_CRT, ROOT_KEY = "root.crt", "root.key"
ISSUING_CRT, ISSUING_KEY = "issuing.crt", "issuing.key"
CHAIN_PEM = "ca-chain.pem"
_PEM = Encoding.PEM


def load_cert(path: Path) -> x509.Certificate:
    """A PEM certificate of the home. Raises HomeInvalidError."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise HomeInvalidError(f"{path.parent} is not a fleet-ca home ({path.name} is missing)") \
            from None
    except (OSError, ValueError) as exc:
        raise HomeInvalidError(f"cannot read {path}: {exc}") from None


def load_previous(home: Path, root: x509.Certificate) -> tuple[x509.Certificate, ...]:
    """The previous issuing CAs kept in `home`, newest first. Raises HomeInvalidError."""
    folder = home / PREVIOUS_DIR
    if not folder.is_dir():
        return ()
    certs = [load_cert(p) for p in sorted(folder.glob("*.crt"))]
    for cert in certs:
        try:
            cert.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature):
            raise HomeInvalidError(f"{folder}: {serial_hex(cert.serial_number)}.crt is not"
                                   f" signed by {ROOT_CRT}") from None
    return tuple(sorted(certs, key=lambda c: c.not_valid_before_utc, reverse=True))


def previous_issuers(home: Path, certs: tuple[x509.Certificate, ...],
                     passphrase: bytes | None, now: dt.datetime) -> list[Issuer]:
    """The previous issuing CAs that still need a CRL (not yet expired at `now`), with their
    keys (encrypted with the home's issuing passphrase). Raises PassphraseError,
    HomeInvalidError."""
    out = []
    for cert in certs:
        if cert.not_valid_after_utc < now:
            continue  # retired: nothing it issued can still be valid
        path = home / PREVIOUS_DIR / f"{serial_hex(cert.serial_number)}.key"
        try:
            key = load_private_key_pem(path.read_bytes(), passphrase)
        except OSError as exc:
            raise HomeInvalidError(f"cannot read {path}: {exc.strerror or exc}") from None
        if key.public_key() != cert.public_key():
            raise HomeInvalidError(f"{path} does not match its certificate")
        out.append(Issuer.of(cert, key))
    return out


def chain_pem(home: Path) -> bytes:
    """What ca-chain.pem holds: the current issuing CA, the previous ones, the root."""
    root = load_cert(home / ROOT_CRT)
    certs = [load_cert(home / ISSUING_CRT), *load_previous(home, root), root]
    return b"".join(c.public_bytes(_PEM) for c in certs)


def _swap(home: Path) -> None:
    """Rename whichever of issuing.next.* is still there over issuing.*; rewrite the chain."""
    for src, dst in ((NEXT_KEY, ISSUING_KEY), (NEXT_CRT, ISSUING_CRT)):
        if (home / src).exists():
            os.rename(home / src, home / dst)
    fsync_dir(home)
    atomic_write(home / CHAIN_PEM, chain_pem(home))


def recover(home: Path, inventory: Inventory) -> None:
    """Finish a recorded rotation interrupted by a crash; discard an unrecorded one."""
    if not (home / NEXT_CRT).exists():
        return
    cert = load_cert(home / NEXT_CRT)
    try:
        if inventory.get(cert.serial_number) is not None:
            _swap(home)
        else:
            for name in (NEXT_KEY, NEXT_CRT):
                (home / name).unlink(missing_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot finish the issuing-CA rotation in {home}:"
                          f" {exc.strerror or exc}") from None


def rotate_issuing(
    home: Path,
    inventory: Inventory,
    *,
    current: Issuer,
    root_passphrase: bytes | None,
    issuing_passphrase: bytes | None,
    actor: str,
    now: dt.datetime,
) -> x509.Certificate:
    """Make a new issuing CA signed by the root and put it in charge; keep `current` as a
    previous one. The new key is encrypted with `issuing_passphrase` (the home's). The caller
    rewrites the CRLs. Returns the new issuing certificate.

    Raises PassphraseError (root), HomeInvalidError (root.key offline or not matching),
    OutputError.
    """
    now = check_utc(now)
    try:
        root_data = (home / ROOT_KEY).read_bytes()
    except FileNotFoundError:
        raise HomeInvalidError(f"{home / ROOT_KEY} is not here: bring the offline root key"
                               " back for the rotation ceremony") from None
    except OSError as exc:
        raise HomeInvalidError(f"cannot read {home / ROOT_KEY}: {exc.strerror}") from None
    root_cert = load_cert(home / ROOT_CRT)
    root_key = load_private_key_pem(root_data, root_passphrase)
    if root_key.public_key() != root_cert.public_key():
        raise HomeInvalidError(f"{ROOT_KEY} does not match {ROOT_CRT}")
    root = Issuer.of(root_cert, root_key)
    generation = 1 + len(inventory.select(now=now, kind=Kind.ISSUING))
    name = root_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    key = generate_key(key_type_of(current.key))
    cert = build_issuing(key.public_key(), root=root, name=str(name), now=now,
                         generation=generation)
    old = serial_hex(current.cert.serial_number)
    try:
        (home / PREVIOUS_DIR).mkdir(mode=0o755, exist_ok=True)
        atomic_write(home / PREVIOUS_DIR / f"{old}.key", (home / ISSUING_KEY).read_bytes(),
                     0o600)
        atomic_write(home / PREVIOUS_DIR / f"{old}.crt", current.cert.public_bytes(_PEM))
        atomic_write(home / NEXT_KEY, private_key_pem(key, issuing_passphrase), 0o600)
        atomic_write(home / NEXT_CRT, cert.public_bytes(_PEM))
        with inventory.transaction() as conn:
            inventory.add(conn, [CertRecord.of(cert, Kind.ISSUING, None, now)])
            event = audit.issued(cert, Kind.ISSUING, action="rotate-issuing")
            event.details["previous"] = old
            audit.append(conn, [event], actor=actor, at=now)
        _swap(home)
    except OSError as exc:
        raise OutputError(f"cannot rotate the issuing CA in {home}: {exc.strerror or exc}") \
            from None
    finally:
        if (home / NEXT_CRT).exists() and inventory.get(cert.serial_number) is None:
            for n in (NEXT_KEY, NEXT_CRT):
                (home / n).unlink(missing_ok=True)
    return cert
