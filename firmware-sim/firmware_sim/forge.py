"""Certificates for the identity attacks: forged (self-signed, another CA's) with the `ca`
library, or taken from a folder, or made with a dev CA home (expired, revoked, server)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CertsError


@dataclass(frozen=True, slots=True)
class Creds:
    """A certificate (chain) file and its key file."""

    cert: Path
    key: Path


# -- certificates for the identity attacks ------------------------------------------------


def make_odd_certs(out: Path, victim: uuid.UUID, *, ca_home: Path | None,
                   given: Path | None) -> dict[str, Creds | str]:
    """Credentials for each identity attack, or why one is missing.

    Self-signed and another CA's are always made here (the `ca` library); expired, revoked
    and server come from `given/<kind>/` (any *.crt with its *.key), else from an
    unencrypted CA home, which is only read: expired is signed by its issuing key in memory,
    revoked too, carrying a serial its CRL already lists (none listed: not tried), and the
    server certificate is `<home>/server/server.crt`. Nothing is recorded in its inventory.
    """
    try:
        from ca.bundles import write_bundle
        from ca.keys import generate_key
        from ca.profiles import build_device, build_hierarchy, build_self_signed_device
    except ImportError:  # the simulator may be installed without the CA
        return {k: "the `ca` package" for k in ("self-signed", "foreign-ca", "expired",
                                                 "server", "revoked")}
    now = dt.datetime.now(dt.UTC)
    odd: dict[str, Creds | str] = {}

    def written(name: str, key: Any, cert: Any, chain: list[Any], root: Any) -> Creds:
        b = write_bundle(out / name, key=key, cert=cert, chain=chain, ca_cert=root)
        return Creds(b.cert_path, b.key_path)

    key = generate_key()
    cert = build_self_signed_device(key, network=victim, now=now)
    odd["self-signed"] = written("self-signed", key, cert, [], cert)
    foreign = build_hierarchy(name="not fleetgate", now=now)
    key = generate_key()
    odd["foreign-ca"] = written("foreign-ca", key,
                                build_device(key.public_key(), issuer=foreign.issuing,
                                             network=victim, now=now),
                                [foreign.issuing.cert], foreign.root.cert)
    for kind in ("expired", "server", "revoked"):
        found = _given(given, kind) if given else None
        odd[kind] = found or f"--attack-certs DIR/{kind}/ or --ca-home"
    if ca_home is None:
        return odd
    try:
        from ca import CAError, CAHome

        home = CAHome.open(ca_home)
        try:
            issuer = home.issuer
            if not isinstance(odd["expired"], Creds):
                key = generate_key()
                odd["expired"] = written("expired", key, build_device(
                    key.public_key(), issuer=issuer, network=victim, now=now,
                    not_before=now - dt.timedelta(days=30),
                    not_after=now - dt.timedelta(days=1)),
                    [home.issuing_cert], home.root_cert)
            server = home.path / "server"
            if not isinstance(odd["server"], Creds) and (server / "server.crt").is_file():
                odd["server"] = Creds(server / "server.crt", server / "server.key")
            if not isinstance(odd["revoked"], Creds):
                # A serial the CRL already lists, on a certificate made in memory: the
                # operator's inventory and CRL are never written to.
                revoked = sorted(r.serial_number for r in home.load_crl())
                if revoked:
                    key = generate_key()
                    odd["revoked"] = written("revoked", key, build_device(
                        key.public_key(), issuer=issuer, network=victim, now=now,
                        serial=revoked[0]), [home.issuing_cert], home.root_cert)
                else:
                    odd["revoked"] = ("a revoked certificate in the CA home's CRL, or "
                                      "--attack-certs DIR/revoked/")
        finally:
            home.close()
    except CAError as exc:
        raise CertsError(f"--ca-home {ca_home}: {exc}") from None
    return odd


def _given(folder: Path, kind: str) -> Creds | None:
    base = folder / kind
    certs = sorted(base.glob("*.crt")) if base.is_dir() else []
    certs = [c for c in certs if c.name != "ca.crt"]
    for cert in certs:
        key = cert.with_suffix(".key")
        if key.is_file():
            return Creds(cert, key)
    return None
