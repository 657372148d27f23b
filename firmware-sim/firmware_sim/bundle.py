"""A device bundle on disk, as `fleet-ca issue device` writes it.

`<dir>/device.crt` (the certificate, then the issuing CA), `device.key`, `ca.crt` (the root
that signs the gateway's certificate). The network UUID is read from the certificate (SAN
URI `urn:uuid:...`, else the subject CN), never from the folder name, which is only a hint.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from .errors import BundleError

FILES = ("device.crt", "device.key", "ca.crt")


@dataclass(frozen=True, slots=True)
class Bundle:
    """One device's credentials: paths to give paho's tls_set, and the network it names."""

    dir: Path
    cert: Path
    key: Path
    ca: Path
    network: uuid.UUID | None

    @property
    def name(self) -> str:
        return str(self.network) if self.network else self.dir.name


def network_of(cert: x509.Certificate) -> uuid.UUID | None:
    """The network UUID a device certificate names, or None for another kind of certificate."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
            if uri.lower().startswith("urn:uuid:"):
                return uuid.UUID(uri[9:])
    except (x509.ExtensionNotFound, ValueError):
        pass
    for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        try:
            return uuid.UUID(str(attr.value))
        except ValueError:
            return None
    return None


def load_bundle(path: Path | str) -> Bundle:
    """Read a bundle folder.

    Raises:
        BundleError: the folder or one of its three files is missing, or the certificate
            does not parse.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise BundleError(f"bundle {folder}: not a folder")
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise BundleError(f"bundle {folder}: missing {', '.join(missing)}")
    try:
        cert = x509.load_pem_x509_certificates((folder / "device.crt").read_bytes())[0]
    except (OSError, ValueError) as exc:
        raise BundleError(f"bundle {folder}: device.crt unreadable: {exc}") from None
    return Bundle(folder, folder / "device.crt", folder / "device.key", folder / "ca.crt",
                  network_of(cert))


def find_bundles(root: Path | str, count: int | None = None) -> list[Bundle]:
    """The bundles directly under `root` (sorted by folder name), at most `count`.

    Raises:
        BundleError: `root` is not a folder or holds no bundle.
    """
    base = Path(root)
    if not base.is_dir():
        raise BundleError(f"bundles folder {base}: not a folder")
    found = [load_bundle(d) for d in sorted(base.iterdir())
             if d.is_dir() and (d / "device.crt").is_file()]
    if not found:
        raise BundleError(f"bundles folder {base}: no bundle (<uuid>/device.crt) inside")
    return found[:count] if count is not None else found


def parse_hostport(text: str, default_port: int = 8883) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `host` -> (host, port).

    Raises:
        ValueError: the port is not a number in 1..65535.
    """
    host, port = text, default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = int(p)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return host or "127.0.0.1", port
