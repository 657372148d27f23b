"""The gateway's client of the online signer (`fleet-ca serve`): EST (RFC 7030) over h11 on
trio, to a unix socket or to HTTPS with the gateway's registrar certificate.

The gateway never holds a CA key: it relays a device's CSR, with the claim or the current
device certificate the device proved at its TLS handshake (`Fleetgate-Claim` /
`Fleetgate-Device`, base64 DER), and reads back the new certificate or the signer's refusal
(status, `Fleetgate-Reason`, text). Every call is async I/O on the event loop's sockets; the
caller puts its deadline around it (`trio.fail_after`). One connection per request: signing
is rare (a device's first boot, then once per renewal).
"""

from __future__ import annotations

import base64
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import h11
import trio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from .errors import ConfigError, GatewayError

EST = "/.well-known/est/"
MAX_ANSWER_BYTES = 256 * 1024


class SignerUnavailable(GatewayError):
    """The signer could not be reached or answered something unreadable."""


@dataclass(frozen=True, slots=True)
class Signed:
    """A certificate the signer issued, with the issuing CA that signed it."""

    cert: x509.Certificate
    issuing: x509.Certificate | None

    @property
    def chain_pem(self) -> str:
        chain = [self.cert] + ([self.issuing] if self.issuing is not None else [])
        return b"".join(c.public_bytes(Encoding.PEM) for c in chain).decode()


@dataclass(frozen=True, slots=True)
class Refused:
    """The signer's refusal: a stable reason word and its explanation."""

    reason: str
    detail: str
    retry_after: int | None = None


class SignerClient:
    """EST requests to one signer: `unix:/path` or `https://HOST:PORT`."""

    def __init__(self, target: str, *, root: Path | None = None, cert: Path | None = None,
                 key: Path | None = None) -> None:
        self.target = target
        self._issuers: dict[bytes, x509.Certificate] = {}
        self._ctx: ssl.SSLContext | None = None
        if target.startswith("unix:"):
            self.unix: str | None = target[len("unix:"):]
            self.host, self.port = "localhost", 0
        elif target.startswith("https://"):
            self.unix = None
            host, _, port = target[len("https://"):].rstrip("/").rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"signer {target!r}: expected https://HOST:PORT")
            self.host, self.port = host.strip("[]"), int(port)
            if cert is None or key is None or root is None:
                raise ConfigError("an HTTPS signer needs signer_cert and signer_key (a"
                                  " registrar certificate: fleet-ca issue registrar)")
            try:
                ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(root))
                ctx.load_cert_chain(str(cert), str(key))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"signer TLS files unusable: {exc}") from None
            self._ctx = ctx
        else:
            raise ConfigError(f"signer {target!r}: expected unix:/PATH, https://HOST:PORT"
                              " or off")

    async def enroll(self, csr_der: bytes, claim_der: bytes) -> Signed | Refused:
        """simpleenroll on behalf of a claim. Raises SignerUnavailable."""
        return await self._enroll("simpleenroll", csr_der, [("fleetgate-claim", claim_der)])

    async def reenroll(self, csr_der: bytes, device_der: bytes) -> Signed | Refused:
        """simplereenroll on behalf of a device's current certificate."""
        return await self._enroll("simplereenroll", csr_der, [("fleetgate-device", device_der)])

    async def first_use(self, device_der: bytes) -> int | Refused:
        """Tell the signer a renewed certificate is in use: it revokes the certificates it
        replaced now. Returns how many it revoked. Raises SignerUnavailable."""
        status, headers, body = await self._request(
            "POST", "fleetgate-first-use",
            [("fleetgate-device", base64.b64encode(device_der).decode())], b"")
        text = body.decode("utf-8", "replace").strip()
        if status != 200:
            return Refused(headers.get("fleetgate-reason", f"http_{status}"), text[:300])
        count = text.removeprefix("superseded ")
        if not count.isdigit():
            raise SignerUnavailable(f"unreadable answer from the signer: {text[:80]!r}")
        return int(count)

    async def revoke(self, serial: int | None, reason: str, *, network: UUID | None = None,
                     by: str | None = None) -> list[str] | Refused:
        """Ask the signer to revoke device certificate `serial`, or every valid one of
        `network` (reason: a word of ca.signer.policy.REVOKE_REASONS; `by`: who asked, for
        the CA's audit trail). Returns the serials revoked (hex; the CA's crl.pem already
        lists them) or the refusal. Raises SignerUnavailable."""
        doc = {"reason": reason, "by": by, "network": str(network) if network else None,
               "serial": format(serial, "x") if serial is not None else None}
        status, headers, body = await self._request(
            "POST", "revoke", [("content-type", "application/json")], json.dumps(doc).encode())
        if status != 200:
            return Refused(headers.get("fleetgate-reason", f"http_{status}"),
                           body.decode("utf-8", "replace").strip()[:300])
        try:
            return [str(s) for s in json.loads(body)["revoked"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise SignerUnavailable(f"unreadable answer from the signer: {exc}") from None

    async def _enroll(self, op: str, csr_der: bytes,
                      certs: list[tuple[str, bytes]]) -> Signed | Refused:
        headers = [("content-type", "application/pkcs10")]
        headers += [(name, base64.b64encode(der).decode()) for name, der in certs]
        status, answer_headers, body = await self._request(
            "POST", op, headers, base64.encodebytes(csr_der))
        if status != 200:
            retry = answer_headers.get("retry-after", "")
            return Refused(answer_headers.get("fleetgate-reason", f"http_{status}"),
                           body.decode("utf-8", "replace").strip()[:300],
                           int(retry) if retry.isdigit() else None)
        try:
            [cert] = pkcs7.load_der_pkcs7_certificates(base64.b64decode(body))
        except ValueError as exc:
            raise SignerUnavailable(f"unreadable answer from the signer: {exc}") from None
        return Signed(cert, await self._issuer_of(cert))

    async def _issuer_of(self, cert: x509.Certificate) -> x509.Certificate | None:
        """The issuing CA of `cert`, from the signer's cacerts (cached; fetched again when
        an unknown issuer appears, e.g. after a rotation)."""
        key = cert.issuer.public_bytes()
        if key not in self._issuers:
            status, _, body = await self._request("GET", "cacerts", [], b"")
            if status != 200:
                return None
            try:
                found = pkcs7.load_der_pkcs7_certificates(base64.b64decode(body))
            except ValueError:
                return None
            self._issuers = {c.subject.public_bytes(): c for c in found}
        return self._issuers.get(key)

    async def _open(self) -> trio.abc.Stream:
        try:
            if self.unix is not None:
                return await trio.open_unix_socket(self.unix)
            tcp = await trio.open_tcp_stream(self.host, self.port)
            stream = trio.SSLStream(tcp, self._ctx, server_hostname=self.host)
            await stream.do_handshake()
            return stream
        except (OSError, trio.BrokenResourceError) as exc:
            raise SignerUnavailable(f"cannot reach the signer at {self.target}: {exc}") \
                from None

    async def _request(self, method: str, op: str, headers: list[tuple[str, str]],
                       body: bytes) -> tuple[int, dict[str, str], bytes]:
        stream = await self._open()
        conn = h11.Connection(h11.CLIENT)
        try:
            out = conn.send(h11.Request(method=method, target=EST + op, headers=[
                ("host", self.host), ("content-length", str(len(body))),
                ("connection", "close"), *headers]))
            out += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
            await stream.send_all(out)
            response, data = None, bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(64 * 1024))
                elif isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    data += event.data
                    if len(data) > MAX_ANSWER_BYTES:
                        raise SignerUnavailable("the signer's answer is too large")
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
            if response is None:
                raise SignerUnavailable("the signer closed without an answer")
            found = {k.decode("latin-1"): v.decode("latin-1") for k, v in response.headers}
            return response.status_code, found, bytes(data)
        except (h11.ProtocolError, trio.BrokenResourceError, OSError) as exc:
            raise SignerUnavailable(f"signer request failed: {exc}") from None
        finally:
            with trio.move_on_after(1.0, shield=True):
                await trio.aclose_forcefully(stream)
