"""The admission layer's TLS: the server `SSLContext` and the revoked set, each reloaded
when its files change, independently of the other.

Policy (docs/security.md): TLS 1.2 and 1.3 only; on TLS 1.2 only ECDHE key exchange with
AES-GCM or ChaCha20-Poly1305 (forward secrecy and AEAD; TLS 1.3 suites all are); a client
certificate is required and verified up to the CA home's root (the issuing CAs of the home
complete the chain of a device that sends its leaf only), and the leaf is checked
against the verified CRLs (`VERIFY_CRL_CHECK_LEAF`: no CRL refuses everyone, never admits).
OpenSSL checks the client certificate's purpose (EKU clientAuth) during the handshake.

A connection takes `TLSContexts.current` when it is accepted, so a context reload (rotated
server certificate, added root) affects only new handshakes and never a live session. The
revoked set (`gateway.revoked`) is the gateway's own check after every handshake
(`TLSContexts.refusal`), and what closes live sessions: it applies the moment crl.pem changes,
even while the context cannot be rebuilt.
"""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .config import GatewayConfig
from .errors import ConfigError
from .reasons import RefusalCause
from .revoked import CRLSigners, IgnoredCert, IgnoredCRL, RevokedSet, load_signers, verify_crls

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def build_server_context(root: Path, crl: Path | bytes, cert: Path, key: Path, *,
                         client_cert: ssl.VerifyMode = ssl.CERT_REQUIRED,
                         issuing: Iterable[x509.Certificate] = ()) -> ssl.SSLContext:
    """Build the server context from PEM files; `crl` is a file or the verified CRLs' PEM.

    The root is the one trust anchor. `issuing` are the issuing CAs certified by it (the CA
    home's certificates, never a key): a device whose TLS stack sends only its leaf (many
    embedded stacks, `openssl s_client -cert`) is verified through them. They complete
    chains and anchor none: without X509_V_FLAG_PARTIAL_CHAIN OpenSSL still requires every
    chain to end at the root, so a chain sent with the leaf verifies exactly as before.

    Raises:
        ConfigError: a file is missing or unreadable, or holds no usable certificate/key/CRL.
    """
    home = root.parent
    if not home.is_dir():
        raise ConfigError(f"CA home not found: {home} (pass --ca-home DIR)")
    files = [("root certificate", root), ("server certificate", cert), ("server key", key)]
    if isinstance(crl, Path):
        files.insert(1, ("CRL", crl))
    for what, path in files:
        if not path.is_file():
            raise ConfigError(f"{what} not found: {path}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_ECDH_USE
    ctx.verify_mode = client_cert
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF | ssl.VERIFY_X509_STRICT
    # One TLS 1.3 session ticket per full handshake, so a device that reconnects resumes:
    # about a third less server CPU per reconnect, which is what a reconnect storm is made
    # of. Tickets are stateless (encrypted under this context's own key, nothing cached per
    # device) and die with the context, so every reload (a CRL, a root, a server
    # certificate) makes the next handshakes full ones again. Resumption keeps forward
    # secrecy (OpenSSL resumes TLS 1.3 with a fresh ECDHE exchange only, psk_dhe_ke) but
    # skips certificate verification, as TLS 1.2 session-id resumption does: so the
    # gateway checks every connection's serial, the CRL's freshness, the certificate's
    # expiry and the network's bars itself (`admission.admit_identity`).
    ctx.num_tickets = 1
    _load(lambda: ctx.load_cert_chain(str(cert), str(key)), "server certificate/key", cert, key)
    _load(lambda: ctx.load_verify_locations(cafile=str(root)), "root certificate", root)
    der = b"".join(ca.public_bytes(Encoding.DER) for ca in issuing)
    if der:
        ctx.load_verify_locations(cadata=der)
    if isinstance(crl, Path):
        _load(lambda: ctx.load_verify_locations(cafile=str(crl)), "CRL", crl)
    else:
        # OpenSSL reads CRLs from files only (`cadata` takes certificates).
        with tempfile.NamedTemporaryFile(prefix="fleetgate-crl-", suffix=".pem") as tmp:
            tmp.write(crl)
            tmp.flush()
            path = Path(tmp.name)
            _load(lambda: ctx.load_verify_locations(cafile=str(path)), "CRL", path)
    return ctx


_SSL_REASONS = {
    "PEM lib": "not a PEM file of the expected kind (a certificate, key or CRL), or damaged",
    "KEY_VALUES_MISMATCH": "the private key does not belong to the certificate",
    "NO_START_LINE": "no PEM block found (is it DER, or empty?)",
    "BAD_DECRYPT": "the key is encrypted: the gateway needs it unencrypted (0600)",
}


def _load(action, what: str, *paths: Path) -> None:
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"{what} not found: {path}")
    try:
        action()
    except ssl.SSLError as exc:
        # OpenSSL's reasons ("PEM lib", "KEY_VALUES_MISMATCH") name its internals: say
        # what an operator can check.
        text = exc.reason or str(exc)
        reason = next((why for key, why in _SSL_REASONS.items() if key in text), text)
        raise ConfigError(f"cannot load {what} from {', '.join(map(str, paths))}: "
                          f"{reason}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {paths[0]}: {exc.strerror}") from None


Stamp = tuple[int, int, int] | None


def _stamp(path: Path) -> Stamp:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class TLSState:
    """A built server context and the revoked set whose CRLs it loaded."""

    context: ssl.SSLContext
    revoked: RevokedSet


@dataclass(frozen=True, slots=True)
class CRLLoad:
    """What one load of crl.pem did (revocation.py logs it)."""

    applied: bool  # a new revoked set is in force
    revoked: RevokedSet  # the set in force after this load
    ignored: tuple[IgnoredCRL, ...] = ()
    trust_ignored: tuple[IgnoredCert, ...] = ()
    problem: str | None = None  # why nothing was applied (the previous set stays)


class TLSContexts:
    """The admission layer's TLS state, in two parts that change independently.

    - `revoked`: the verified revoked set (`gateway.revoked`), reloaded from crl.pem (and the
      trust files that verify it) whenever they change, whatever state the server
      certificate/key are in. Revocation never waits for an unrelated file.
    - `current`: the OpenSSL server context, built from root.crt, the server certificate and
      key, exactly the verified CRLs, and the issuing CAs the root certifies (the CRL
      signers, from issuing.crt and ca-chain.pem); rebuilt when any of them changes and the
      files are usable. While they are not (a server key mid-rotation), the old context
      stays and the gateway's own check after every handshake (`refusal`) applies the new
      revoked set.

    `clock` gives the current UTC time (tests pass their own).
    """

    def __init__(self, config: GatewayConfig, *,
                 clock: Callable[[], datetime] | None = None) -> None:
        self._config = config
        self.clock = clock if clock is not None else (lambda: datetime.now(UTC))
        self.reloads = 0
        self.reload_failures = 0
        self.crl_loads = 0
        self._signers: CRLSigners | None = None
        self._crl_stamps: tuple[Stamp, ...] = ()
        self.last_load = self._load_revoked(initial=True)
        self.revoked: RevokedSet = self.last_load.revoked
        self._attempt = self._context_inputs()
        self.state = TLSState(self.build(), self.revoked)

    @property
    def current(self) -> ssl.SSLContext:
        return self.state.context

    # -- the revoked set ----------------------------------------------------------------

    def _trust_paths(self) -> tuple[Path, ...]:
        c = self._config
        home = c.root_path.parent
        return (c.root_path, home / "issuing.crt", home / "ca-chain.pem", c.cert_path)

    def _crl_paths(self) -> tuple[Path, ...]:
        return (self._config.crl_path, *self._trust_paths())

    @staticmethod
    def _stamps(paths: tuple[Path, ...]) -> tuple[Stamp, ...]:
        return tuple(_stamp(p) for p in paths)

    def revocation_changed(self) -> bool:
        """Whether crl.pem or a trust file differs (stat) from what was last loaded."""
        return self._stamps(self._crl_paths()) != self._crl_stamps

    def reload_revoked(self) -> CRLLoad:
        """Load crl.pem again. Without a verified CRL the current set stays in force."""
        load = self._load_revoked(initial=False)
        if load.applied:
            self.revoked = load.revoked
            self.crl_loads += 1
        self.last_load = load
        return load

    def _load_revoked(self, *, initial: bool) -> CRLLoad:
        """Raises ConfigError when `initial` and no revoked set can be loaded."""
        paths = self._crl_paths()
        self._crl_stamps = self._stamps(paths)  # before reading: a later write is a change
        crl_path, root_path, *others = paths
        signers, trust_ignored = None, ()
        roots = _read(root_path)
        if roots is not None:
            signers, trust_ignored = load_signers(
                roots, [(p.name, data) for p in others if (data := _read(p)) is not None])
        if signers is None:
            # A missing or broken root.crt: the CAs trusted so far still verify the CRL.
            signers = self._signers
        problem = None
        if signers is None:
            home = root_path.parent
            problem = (f"CA home not found: {home} (pass --ca-home DIR)" if not home.is_dir()
                       else f"root certificate not found: {root_path}" if roots is None
                       else f"no usable root certificate in {root_path}")
            revoked, ignored = None, ()
        else:
            self._signers = signers
            data = _read(crl_path)
            if data is None:
                problem = f"CRL not found: {crl_path}"
                revoked, ignored = None, ()
            else:
                revoked, ignored = verify_crls(data, signers)
                if revoked is None:
                    why = "; ".join(f"CRL {i.position}: {i.reason}" for i in ignored)
                    problem = f"no valid CRL in {crl_path}" + (f" ({why})" if why else "")
        if revoked is None:
            if initial:
                raise ConfigError(problem or f"no valid CRL in {crl_path}")
            return CRLLoad(False, self.revoked, ignored, trust_ignored, problem)
        return CRLLoad(True, revoked, ignored, trust_ignored)

    def refusal(self, serial: int) -> tuple[RefusalCause, str] | None:
        """Why a connection with this certificate serial is refused now, if it is:
        (cause, detail). Checked after every handshake, resumed ones included."""
        if serial in self.revoked:
            return RefusalCause.CERT_REVOKED, "certificate revoked"
        if self.revoked.stale(self.clock()):
            return RefusalCause.CRL_EXPIRED, "the CRL is past its nextUpdate: run `fleet-ca crl`"
        return None

    # -- the OpenSSL context --------------------------------------------------------------

    def _context_paths(self) -> tuple[Path, ...]:
        c = self._config
        return (c.root_path, c.cert_path, c.key_path)

    def _context_inputs(self) -> tuple[object, ...]:
        return (self._stamps(self._context_paths()), self.revoked, self._signers)

    def context_changed(self) -> bool:
        """Whether the context's files, the revoked set or the trusted issuing CAs differ
        from the last build attempt (a failed attempt is not retried until one of them
        changes again, or SIGHUP)."""
        stamps, revoked, signers = self._attempt
        return (revoked is not self.revoked or signers != self._signers
                or self._stamps(self._context_paths()) != stamps)

    def build(self, *, client_cert: ssl.VerifyMode = ssl.CERT_REQUIRED) -> ssl.SSLContext:
        """A server context from the files now and the revoked set in force (the HTTPS
        listener builds its own with `client_cert=CERT_OPTIONAL`).

        Raises:
            ConfigError: the files are unusable.
        """
        c = self._config
        issuing = self._signers.issuing if self._signers is not None else ()
        return build_server_context(c.root_path, self.revoked.pem, c.cert_path, c.key_path,
                                    client_cert=client_cert, issuing=issuing)

    def changed(self) -> bool:
        return self.revocation_changed() or self.context_changed()

    def reload(self) -> TLSState:
        """Everything, unlogged: the revoked set (`reload_revoked`), then the context
        (`rebuild`). The file watcher (revocation.py) does each part when it changed.

        Raises:
            ConfigError: the context's files are unusable (the new revoked set applies anyway).
        """
        self.reload_revoked()
        return self.rebuild()

    def rebuild(self) -> TLSState:
        """Rebuild the context from the files and the revoked set in force; on failure keep
        the current context and re-raise.

        Raises:
            ConfigError: the files are unusable (the old context stays in force).
        """
        revoked = self.revoked
        self._attempt = self._context_inputs()
        try:
            context = self.build()
        except ConfigError:
            self.reload_failures += 1
            raise
        self.state = TLSState(context, revoked)
        self.reloads += 1
        return self.state


# OpenSSL X509_V_ERR_* codes -> the reason a refused handshake is logged with.
_VERIFY_CAUSES: dict[int, RefusalCause] = {
    2: RefusalCause.UNKNOWN_CA,  # unable to get issuer certificate
    3: RefusalCause.NO_CRL,  # unable to get certificate CRL
    9: RefusalCause.CERT_NOT_YET_VALID,
    10: RefusalCause.CERT_EXPIRED,
    11: RefusalCause.CRL_NOT_YET_VALID,  # the gateway's CRL: an operator problem, not the device's
    12: RefusalCause.CRL_EXPIRED,  # the gateway's CRL is past nextUpdate: run `fleet-ca crl`
    18: RefusalCause.SELF_SIGNED,  # depth zero self-signed
    19: RefusalCause.SELF_SIGNED,  # self-signed certificate in chain
    20: RefusalCause.UNKNOWN_CA,  # unable to get local issuer certificate
    21: RefusalCause.UNKNOWN_CA,  # unable to verify the first certificate
    23: RefusalCause.CERT_REVOKED,
    26: RefusalCause.WRONG_PURPOSE,  # e.g. a server certificate (EKU serverAuth only)
}


def classify_handshake_error(exc: BaseException) -> tuple[RefusalCause, str]:
    """Name why a TLS handshake failed: (cause token, one-line detail) for the log.

    `exc` is what trio raised (`BrokenResourceError` whose `__cause__` is the `SSLError`),
    or the `SSLError` itself.
    """
    err: BaseException | None = exc
    while err is not None and not isinstance(err, ssl.SSLError):
        err = err.__cause__ or err.__context__
    if err is None:
        return RefusalCause.CONNECTION_LOST, "connection closed during the TLS handshake"
    if isinstance(err, ssl.SSLCertVerificationError):
        cause = _VERIFY_CAUSES.get(err.verify_code, RefusalCause.CERT_INVALID)
        return cause, f"certificate verify failed: {err.verify_message}"
    reason = getattr(err, "reason", None) or type(err).__name__
    if reason in ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "NO_CERTIFICATE_RETURNED"):
        return RefusalCause.NO_CERTIFICATE, "the client presented no certificate"
    if isinstance(err, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return RefusalCause.CONNECTION_LOST, "connection closed during the TLS handshake"
    return RefusalCause.TLS_ERROR, str(reason)
