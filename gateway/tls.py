"""The admission layer's TLS: one server `SSLContext`, rebuilt when its files change.

Policy (docs/security.md): TLS 1.2 and 1.3 only; on TLS 1.2 only ECDHE key exchange with
AES-GCM or ChaCha20-Poly1305 (forward secrecy and AEAD; TLS 1.3 suites all are); a client
certificate is required and verified against the CA home's root, and the leaf is checked
against the CA's CRL (`VERIFY_CRL_CHECK_LEAF`: a missing CRL refuses everyone, never admits).
OpenSSL checks the client certificate's purpose (EKU clientAuth) during the handshake.

A connection takes `TLSContexts.current` when it is accepted, so a reload (new CRL, rotated
server certificate, added root) affects only new handshakes and never a live session.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from .config import GatewayConfig
from .errors import ConfigError

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

# Other public CA files the gateway may find next to root.crt: the issuing CA certificate
# lets devices whose bundle sends only the leaf build their chain. Trust still ends at root.
INTERMEDIATE_NAMES = ("issuing.crt",)


def build_server_context(
    root: Path, crl: Path, cert: Path, key: Path, intermediates: tuple[Path, ...] = ()
) -> ssl.SSLContext:
    """Build the server context from PEM files.

    Raises:
        ConfigError: a file is missing or unreadable, or holds no usable certificate/key/CRL.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_ECDH_USE
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF | ssl.VERIFY_X509_STRICT
    # No session tickets/resumption: every connection proves its certificate against the
    # current CRL, and a revoked device cannot resume a session made before revocation.
    ctx.num_tickets = 0
    _load(lambda: ctx.load_cert_chain(str(cert), str(key)), "server certificate/key", cert, key)
    _load(lambda: ctx.load_verify_locations(cafile=str(root)), "root certificate", root)
    for extra in intermediates:
        _load(lambda p=extra: ctx.load_verify_locations(cafile=str(p)), "CA certificate", extra)
    _load(lambda: ctx.load_verify_locations(cafile=str(crl)), "CRL", crl)
    return ctx


def _load(action, what: str, *paths: Path) -> None:
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"{what} not found: {path}")
    try:
        action()
    except ssl.SSLError as exc:
        raise ConfigError(f"cannot load {what} from {', '.join(map(str, paths))}: "
                          f"{exc.reason or exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {paths[0]}: {exc.strerror}") from None


def revoked_serials(crl_path: Path) -> frozenset[int]:
    """The serial numbers listed in every CRL of a PEM file.

    Raises:
        ConfigError: the file is missing or holds no parseable CRL.
    """
    try:
        data = crl_path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read CRL {crl_path}: {exc.strerror}") from None
    serials: set[int] = set()
    marker = b"-----BEGIN X509 CRL-----"
    blocks = [marker + part for part in data.split(marker)[1:]]
    if not blocks:
        raise ConfigError(f"no CRL in {crl_path}")
    for block in blocks:
        try:
            crl = x509.load_pem_x509_crl(block)
        except ValueError as exc:
            raise ConfigError(f"bad CRL in {crl_path}: {exc}") from None
        serials.update(entry.serial_number for entry in crl)
    return frozenset(serials)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass(frozen=True, slots=True)
class TLSState:
    """What was loaded together: the context and the revoked serials of its CRL."""

    context: ssl.SSLContext
    revoked: frozenset[int]
    stamps: tuple[tuple[int, int, int] | None, ...]


class TLSContexts:
    """Holds the current TLS state and rebuilds it when any of its files change."""

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        self.reloads = 0
        self.reload_failures = 0
        self.state = self._build()

    @property
    def current(self) -> ssl.SSLContext:
        return self.state.context

    @property
    def revoked(self) -> frozenset[int]:
        return self.state.revoked

    def _paths(self) -> tuple[Path, ...]:
        c = self._config
        home = c.root_path.parent
        inter = tuple(home / n for n in INTERMEDIATE_NAMES if (home / n).is_file())
        return (c.root_path, c.crl_path, c.cert_path, c.key_path, *inter)

    def _build(self) -> TLSState:
        paths = self._paths()
        stamps = tuple(_stamp(p) for p in paths)
        root, crl, cert, key, *inter = paths
        context = build_server_context(root, crl, cert, key, tuple(inter))
        return TLSState(context, revoked_serials(crl), stamps)

    def changed(self) -> bool:
        """Whether any watched file differs (stat) from what the current state was built on."""
        paths = self._paths()
        if len(paths) != len(self.state.stamps):
            return True
        return any(_stamp(p) != s for p, s in zip(paths, self.state.stamps, strict=True))

    def reload(self) -> TLSState:
        """Rebuild from the files; on failure keep the current state and re-raise.

        Raises:
            ConfigError: the new files are unusable (the old context stays in force).
        """
        try:
            self.state = self._build()
        except ConfigError:
            self.reload_failures += 1
            raise
        self.reloads += 1
        return self.state
