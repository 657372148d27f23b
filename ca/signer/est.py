"""EST (RFC 7030) over the signer's policy: who is asking, and the wire formats. No sockets.

Routes (RFC 7030 section 3.2.2), all under /.well-known/est/:
- GET  cacerts         (4.1): the issuing CA(s) and the root, as a certs-only PKCS#7; anyone.
- POST simpleenroll    (4.2.1): body a base64 PKCS#10 CSR. The client is a claim certificate
                        (the device itself), or a registrar presenting the claim it admitted
                        in the `Fleetgate-Claim` header (base64 DER). Answer: the new
                        certificate as a base64 certs-only PKCS#7 (4.2.3).
- POST simplereenroll  (4.2.2): the same, for the device's current certificate (the client,
                        or `Fleetgate-Device` from a registrar); `Fleetgate-Supersede: now`
                        revokes the old certificate at once instead of after the grace.
- POST revoke          (fleetgate's own, not EST's): a registrar revokes a device certificate
                        or a network's; JSON in and out (`EstApp._revoke`).
Who the client is comes from its TLS certificate (verified by the TLS layer against our root
and CRL): a registrar is a `urn:fleetgate:registrar:` certificate this CA issued and has not
revoked; on the unix socket, every client is a registrar (the socket's file mode decides who
may connect). Refusals are plain-text answers with a status: 400 (a bad CSR or request), 401
(no usable client certificate), 403 (a claim or device refused), 404, 405, 503 with
Retry-After (a rate limit); each names its reason word in a `Fleetgate-Reason` header.
- POST fleetgate-first-use (fleetgate's own): the client's certificate (or a registrar's
                        `Fleetgate-Device`) is a renewed one now in use: the certificates it
                        replaced are revoked as superseded at once, not after the grace.
The CRLs are served beside EST (`GET /crl.pem`, `GET /crl/<key id>.crl`: `ca.crlpub`), and
alone on the signer's plain-HTTP listener (`CrlApp`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from .. import crlpub
from ..errors import CAError, SignRefusedError
from ..inventory import serial_hex
from ..profiles import CLAIM_URN_PREFIX, REGISTRAR_URN_PREFIX, Kind, named_urn, network_of
from ..store import CAHome
from .policy import Signer

PREFIX = "/.well-known/est/"
CLAIM_HEADER, DEVICE_HEADER, SUPERSEDE_HEADER = "fleetgate-claim", "fleetgate-device", \
    "fleetgate-supersede"
PKCS7_TYPE = "application/pkcs7-mime; smime-type=certs-only"
FIRST_USE_OP = "fleetgate-first-use"  # not EST: a renewed certificate is in use


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is on the other end: `kind` is claim, device, registrar or None (anonymous)."""

    kind: str | None
    cert: x509.Certificate | None = None
    name: str = "anonymous"  # for the audit trail: registrar name, batch, network


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    reason: str = "ok"  # one word for the log line


def identify(der: bytes | None, signer: Signer, *, unix: bool, now: dt.datetime) -> Peer:
    """The peer of a connection, from its (TLS-verified) certificate DER."""
    if unix:
        return Peer("registrar", None, "unix-socket")
    if not der:
        return Peer(None)
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return Peer(None)
    if (batch := named_urn(cert, CLAIM_URN_PREFIX)) is not None:
        return Peer("claim", cert, f"claim:{batch}")
    if (name := named_urn(cert, REGISTRAR_URN_PREFIX)) is not None:
        record = signer.home.inventory.get(cert.serial_number)
        if (record is not None and record.kind == Kind.REGISTRAR
                and record.status_at(now) == "valid"):
            return Peer("registrar", cert, f"registrar:{name}")
        return Peer(None)
    if (network := network_of(cert)) is not None:
        return Peer("device", cert, f"device:{network}")
    return Peer(None)


def _text(status: int, reason: str, message: str, **extra: str) -> Answer:
    # The reason word rides along for registrars that relay it to a device (the gateway).
    headers = [("content-type", "text/plain; charset=utf-8"), ("fleetgate-reason", reason)]
    headers += [(k.replace("_", "-"), v) for k, v in extra.items()]
    return Answer(status, (message + "\n").encode(), headers, reason)


def certs_only(certs: list[x509.Certificate]) -> bytes:
    """A base64 (76-column lines, as RFC 2045) certs-only PKCS#7 of `certs`."""
    return base64.encodebytes(pkcs7.serialize_certificates(certs, Encoding.DER))


def _pkcs7_answer(certs: list[x509.Certificate], reason: str) -> Answer:
    return Answer(200, certs_only(certs), [("content-type", PKCS7_TYPE),
                                           ("content-transfer-encoding", "base64")], reason)


def _b64_der(value: bytes | str, what: str) -> bytes:
    try:
        return base64.b64decode("".join(str(value if isinstance(value, str)
                                            else value.decode("ascii")).split()),
                                validate=True)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise SignRefusedError("bad_encoding", f"{what} is not base64") from None


def _header_cert(headers: dict[str, bytes], name: str) -> x509.Certificate | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return x509.load_der_x509_certificate(_b64_der(value, name))
    except ValueError:
        raise SignRefusedError("bad_header", f"{name} is not a base64 DER certificate") \
            from None


class CrlApp:
    """The CRL routes alone (`ca.crlpub.answer`): what the plain-HTTP listener serves."""

    def __init__(self, home: CAHome) -> None:
        self.home = home

    def handle(self, method: str, target: str, headers: dict[str, bytes], body: bytes,
               peer: Peer) -> Answer:
        path = target.split("?", 1)[0]
        if method != "GET":
            return _text(405, "method", "CRLs are fetched with GET", allow="GET")
        try:
            found = crlpub.answer(path, self.home.load_crls())
        except CAError as exc:  # crl.pem unreadable right now
            return _text(503, "unavailable", str(exc), retry_after="30")
        if found is None:
            return _text(404, "not_found", "this listener serves /crl.pem and /crl/<id>.crl")
        status, ctype, data = found
        return Answer(status, data, [("content-type", ctype)],
                      "crl" if status == 200 else "not_found")


class EstApp:
    """Answers one EST request at a time: `handle(...) -> Answer`. Never raises for a
    client's mistake; `now` comes from the clock it was given. The CRL routes are served
    here too (`CrlApp`)."""

    def __init__(self, signer: Signer, clock: Callable[[], dt.datetime]) -> None:
        self.signer = signer
        self.clock = clock
        self.crls = CrlApp(signer.home)

    def cacerts(self) -> list[x509.Certificate]:
        home = self.signer.home
        return [home.issuing_cert, *home.previous_issuing, home.root_cert]

    def handle(self, method: str, target: str, headers: dict[str, bytes], body: bytes,
               peer: Peer) -> Answer:
        path = target.split("?", 1)[0]
        if path == "/crl.pem" or path.startswith("/crl/"):
            return self.crls.handle(method, target, headers, body, peer)
        if not path.startswith(PREFIX):
            return _text(404, "not_found", "not an EST path (/.well-known/est/...)")
        op = path[len(PREFIX):]
        if op == FIRST_USE_OP:
            return self._first_use(method, headers, peer)
        routes = {"cacerts": "GET", "simpleenroll": "POST", "simplereenroll": "POST",
                  "revoke": "POST"}
        if op not in routes:
            return _text(404, "not_found", f"no EST operation {op!r} here")
        if method != routes[op]:
            return _text(405, "method", f"{op} takes {routes[op]}", allow=routes[op])
        if op == "cacerts":
            return _pkcs7_answer(self.cacerts(), "cacerts")
        try:
            if op == "revoke":
                return self._revoke(body, peer)
            return self._enroll(op, headers, body, peer)
        except SignRefusedError as exc:
            extra = {"retry_after": str(exc.retry_after)} if exc.retry_after else {}
            return _text(exc.status, exc.reason, str(exc), **extra)
        except CAError as exc:  # the inventory is locked or the disk full: try later
            return _text(503, "unavailable", f"the signer cannot record now: {exc}",
                         retry_after="30")

    def _first_use(self, method: str, headers: dict[str, bytes], peer: Peer) -> Answer:
        """fleetgate's extension: the renewed certificate (the client's own, or a
        registrar's `Fleetgate-Device`) is in use; its predecessors are revoked now."""
        if method != "POST":
            return _text(405, "method", f"{FIRST_USE_OP} takes POST", allow="POST")
        try:
            device = peer.cert if peer.kind == "device" else (
                _header_cert(headers, DEVICE_HEADER) if peer.kind == "registrar" else None)
            if device is None:
                return _text(401, "unauthenticated", f"{FIRST_USE_OP} needs the renewed device"
                             " certificate (as the TLS client, or from a registrar)")
            n = self.signer.first_use(device, now=self.clock(), actor=peer.name)
        except SignRefusedError as exc:
            return _text(exc.status, exc.reason, str(exc))
        except CAError as exc:
            return _text(503, "unavailable", f"the signer cannot record now: {exc}",
                         retry_after="30")
        return _text(200, "first_use", f"superseded {n}")

    def _enroll(self, op: str, headers: dict[str, bytes], body: bytes, peer: Peer) -> Answer:
        ctype = headers.get("content-type", b"application/pkcs10").split(b";")[0].strip()
        if ctype.lower() != b"application/pkcs10":
            return _text(415, "content_type", "send the CSR as application/pkcs10 (base64)")
        csr = _b64_der(body, "the CSR")
        now = self.clock()
        if op == "simpleenroll":
            claim = peer.cert if peer.kind == "claim" else (
                _header_cert(headers, CLAIM_HEADER) if peer.kind == "registrar" else None)
            if claim is None:
                return _text(401, "unauthenticated", "simpleenroll needs a claim certificate"
                             " (as the TLS client, or from a registrar in Fleetgate-Claim)")
            issued = self.signer.enroll(csr, claim=claim, now=now, actor=peer.name)
            return _pkcs7_answer([issued.cert], f"enrolled {issued.network}"
                                 f" serial {serial_hex(issued.cert.serial_number)}")
        device = peer.cert if peer.kind == "device" else (
            _header_cert(headers, DEVICE_HEADER) if peer.kind == "registrar" else None)
        if device is None:
            return _text(401, "unauthenticated", "simplereenroll needs the device's current"
                         " certificate (as the TLS client, or from a registrar)")
        now_flag = headers.get(SUPERSEDE_HEADER, b"").strip().lower() == b"now"
        issued = self.signer.reenroll(csr, device=device, now=now, actor=peer.name,
                                      supersede_now=now_flag)
        return _pkcs7_answer([issued.cert], f"reenrolled {issued.network}"
                             f" serial {serial_hex(issued.cert.serial_number)}")

    def _revoke(self, body: bytes, peer: Peer) -> Answer:
        """POST revoke: a registrar (the gateway's console) revokes device certificates.
        Body: JSON {"network": UUID and/or "serial": hex, "reason": word, "by": who asked}.
        Answer: JSON {"revoked": [serial hex, ...]}; the CRL is rewritten before it."""
        if peer.kind != "registrar":
            return _text(403 if peer.kind else 401, "not_registrar",
                         "only a registrar may revoke (fleet-ca issue registrar)")
        try:
            doc = json.loads(body)
            network = uuid.UUID(doc["network"]) if doc.get("network") else None
            serial = int(doc["serial"], 16) if doc.get("serial") else None
            reason, by = str(doc.get("reason", "unspecified")), doc.get("by")
        except (ValueError, TypeError, AttributeError, UnicodeDecodeError):
            return _text(400, "bad_request", 'send JSON {"network" or "serial", "reason"}')
        revoked = self.signer.revoke(network=network, serial=serial, reason=reason,
                                     now=self.clock(), actor=peer.name,
                                     by=str(by)[:200] if by else None)
        return Answer(200, json.dumps({"revoked": [serial_hex(s) for s in revoked]}).encode(),
                      [("content-type", "application/json")], f"revoked {len(revoked)}")
