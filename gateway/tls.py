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
from datetime import datetime
from pathlib import Path

from cryptography import x509

from .config import GatewayConfig
from .errors import ConfigError

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

def build_server_context(root: Path, crl: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """Build the server context from PEM files.

    Devices send their chain (leaf + issuing CA, as `fleet-ca` bundles hold it), so the
    root is the only CA certificate the gateway needs.

    Raises:
        ConfigError: a file is missing or unreadable, or holds no usable certificate/key/CRL.
    """
    home = root.parent
    if not home.is_dir():
        raise ConfigError(f"CA home not found: {home} (pass --ca-home DIR)")
    for what, path in (("root certificate", root), ("CRL", crl),
                       ("server certificate", cert), ("server key", key)):
        if not path.is_file():
            raise ConfigError(f"{what} not found: {path}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_ECDH_USE | ssl.OP_NO_TICKET
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF | ssl.VERIFY_X509_STRICT
    # No session tickets. A TLS 1.2 session-id resumption skips certificate verification,
    # so the server also checks every connection's serial and expiry itself (server.py).
    ctx.num_tickets = 0
    _load(lambda: ctx.load_cert_chain(str(cert), str(key)), "server certificate/key", cert, key)
    _load(lambda: ctx.load_verify_locations(cafile=str(root)), "root certificate", root)
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
    """The serial numbers listed in every CRL of a PEM file."""
    return read_crls(crl_path)[0]


def read_crls(crl_path: Path) -> tuple[frozenset[int], datetime | None]:
    """The revoked serials of every CRL in a PEM file, and the earliest nextUpdate.

    Raises:
        ConfigError: the file is missing or holds no parseable CRL.
    """
    try:
        data = crl_path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read CRL {crl_path}: {exc.strerror}") from None
    serials: set[int] = set()
    next_update: datetime | None = None
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
        if crl.next_update_utc is not None:
            next_update = min(filter(None, (next_update, crl.next_update_utc)))
    return frozenset(serials), next_update


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
    crl_next_update: datetime | None
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
        return (c.root_path, c.crl_path, c.cert_path, c.key_path)

    def _build(self) -> TLSState:
        paths = self._paths()
        stamps = tuple(_stamp(p) for p in paths)
        root, crl, cert, key = paths
        context = build_server_context(root, crl, cert, key)
        revoked, next_update = read_crls(crl)
        return TLSState(context, revoked, next_update, stamps)

    def stamps_now(self) -> tuple[tuple[int, int, int] | None, ...]:
        return tuple(_stamp(p) for p in self._paths())

    def changed(self) -> bool:
        """Whether any watched file differs (stat) from what the current state was built on."""
        paths = self._paths()
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


# OpenSSL X509_V_ERR_* codes -> the reason a refused handshake is logged with.
_VERIFY_CAUSES = {
    2: "UNKNOWN_CA",  # unable to get issuer certificate
    3: "NO_CRL",  # unable to get certificate CRL
    9: "CERT_NOT_YET_VALID",
    10: "CERT_EXPIRED",
    11: "CRL_NOT_YET_VALID",  # the gateway's CRL: an operator problem, not the device's
    12: "CRL_EXPIRED",  # the gateway's CRL is past nextUpdate: run `fleet-ca crl`
    18: "SELF_SIGNED",  # depth zero self-signed
    19: "SELF_SIGNED",  # self-signed certificate in chain
    20: "UNKNOWN_CA",  # unable to get local issuer certificate
    21: "UNKNOWN_CA",  # unable to verify the first certificate
    23: "CERT_REVOKED",
    26: "WRONG_PURPOSE",  # e.g. a server certificate (EKU serverAuth only)
}


def classify_handshake_error(exc: BaseException) -> tuple[str, str]:
    """Name why a TLS handshake failed: (cause token, one-line detail) for the log.

    `exc` is what trio raised (`BrokenResourceError` whose `__cause__` is the `SSLError`),
    or the `SSLError` itself.
    """
    err: BaseException | None = exc
    while err is not None and not isinstance(err, ssl.SSLError):
        err = err.__cause__ or err.__context__
    if err is None:
        return "CONNECTION_LOST", "connection closed during the TLS handshake"
    if isinstance(err, ssl.SSLCertVerificationError):
        cause = _VERIFY_CAUSES.get(err.verify_code, "CERT_INVALID")
        return cause, f"certificate verify failed: {err.verify_message}"
    reason = getattr(err, "reason", None) or type(err).__name__
    if reason in ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "NO_CERTIFICATE_RETURNED"):
        return "NO_CERTIFICATE", "the client presented no certificate"
    if isinstance(err, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return "CONNECTION_LOST", "connection closed during the TLS handshake"
    return "TLS_ERROR", str(reason)
