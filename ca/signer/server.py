"""The signer's listeners: HTTPS with mutual TLS and a unix socket, h11 on trio.

Theory of operation (the shape of h11's examples/trio-server.py), per accepted connection:
TLS handshake under `handshake_timeout` (HTTPS only; the client certificate is optional, and
verified against the root and crl.pem when sent, so a revoked claim or device never gets past
TLS); the peer identified once (`est.identify`); then requests one after another, each head
and body under a deadline and a size cap, answered by `EstApp.handle` (which never raises for
a client's mistake). The policy's inventory writes run in this thread, one request at a time:
a signature costs a few milliseconds, and SQLite would serialise the writers anyway.

A housekeeping task revokes renewed certificates whose grace has passed (`Signer.sweep`) and
keeps crl.pem fresh. Every request ends in one JSON log line on stderr: operation, peer
(registrar name, claim batch or network UUID; never an IP address), status and reason.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import trio

from ..profiles import check_utc
from .est import Answer, CrlApp, EstApp, Peer, identify
from .policy import Signer

RECEIVE_SIZE = 16 * 1024


@dataclass(frozen=True, slots=True)
class ServeLimits:
    handshake_timeout: float = 10.0
    request_timeout: float = 30.0  # a request's head and body, or keep-alive idleness
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 64 * 1024  # a CSR is ~1 KiB
    max_connections: int = 256
    sweep_interval: float = 60.0
    crl_refresh: dt.timedelta = dt.timedelta(days=1)  # re-sign crl.pem at least this often


class JsonLog:
    """One JSON object per line on `stream` (stderr by default)."""

    def __init__(self, stream: Any = None, clock: Callable[[], dt.datetime] | None = None):
        self.stream = stream or sys.stderr
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))

    def emit(self, event: str, **fields: object) -> None:
        line = {"ts": self.clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "event": event, **fields}
        self.stream.write(json.dumps(line) + "\n")
        self.stream.flush()


class TlsContexts:
    """The HTTPS server context, rebuilt when crl.pem or root.crt changes (checked at accept
    time with one stat each), so a revocation by `fleet-ca revoke` applies to new connections
    without a restart."""

    def __init__(self, home: Path, cert: Path, key: Path) -> None:
        self.home, self.cert, self.key = home, cert, key
        self._stamp: tuple | None = None
        self._ctx: ssl.SSLContext | None = None

    def __call__(self) -> ssl.SSLContext:
        files = (self.home / "crl.pem", self.home / "root.crt", self.cert, self.key)
        stamp = tuple((os.stat(f).st_mtime_ns, os.stat(f).st_size) for f in files)
        if self._ctx is None or stamp != self._stamp:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(self.cert, self.key)
            ctx.load_verify_locations(cafile=str(self.home / "root.crt"))
            ctx.load_verify_locations(cafile=str(self.home / "crl.pem"))
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
            ctx.verify_mode = ssl.CERT_OPTIONAL  # cacerts is open to anyone (RFC 7030 4.1.1)
            self._ctx, self._stamp = ctx, stamp
        return self._ctx


class _Conn:
    def __init__(self, stream: trio.abc.Stream, app: EstApp | CrlApp, peer: Peer,
                 limits: ServeLimits, log: JsonLog) -> None:
        self.stream, self.app, self.peer, self.limits, self.log = stream, app, peer, limits, log
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)

    async def _event(self) -> Any:
        while (event := self.h11.next_event()) is h11.NEED_DATA:
            try:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            self.h11.receive_data(data)
        return event

    async def _send(self, answer: Answer, close: bool = False) -> None:
        headers = [("server", "fleet-ca"), ("content-length", str(len(answer.body))),
                   *answer.headers]
        if close:
            headers.append(("connection", "close"))
        data = self.h11.send(h11.Response(status_code=answer.status, headers=headers))
        data += self.h11.send(h11.Data(data=answer.body)) + self.h11.send(h11.EndOfMessage())
        with trio.fail_after(self.limits.request_timeout):
            await self.stream.send_all(data)

    async def run(self) -> None:
        while True:
            try:
                with trio.fail_after(self.limits.request_timeout):
                    request = await self._event()
                    if isinstance(request, h11.ConnectionClosed):
                        return
                    body = bytearray()
                    while not isinstance(part := await self._event(), h11.EndOfMessage):
                        if isinstance(part, h11.ConnectionClosed):
                            return
                        body += part.data
                        if len(body) > self.limits.max_body_bytes:
                            await self._send(Answer(413, b"request body too large\n"), True)
                            return
            except trio.TooSlowError:
                return
            except h11.RemoteProtocolError as exc:
                if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._send(Answer(exc.error_status_hint, b"malformed request\n"), True)
                return
            headers = {k.decode("latin-1"): v for k, v in request.headers}
            method = request.method.decode("ascii", "replace")
            target = request.target.decode("ascii", "replace")
            answer = self.app.handle(method, target, headers, bytes(body), self.peer)
            self.log.emit("est", op=target.split("?")[0].rsplit("/", 1)[-1], peer=self.peer.name,
                          status=answer.status, reason=answer.reason)
            await self._send(answer)
            if self.h11.our_state is h11.MUST_CLOSE:
                return
            try:
                self.h11.start_next_cycle()
            except h11.LocalProtocolError:
                return


async def serve_signer(
    signer: Signer,
    *,
    https: tuple[str, int] | None = None,
    tls: Callable[[], ssl.SSLContext] | None = None,
    unix: Path | None = None,
    unix_mode: int = 0o660,
    crl_http: tuple[str, int] | None = None,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC).replace(microsecond=0),
    limits: ServeLimits = ServeLimits(),
    log: JsonLog | None = None,
    task_status: trio.TaskStatus[dict[str, object]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve EST on HTTPS (`https` address with `tls()` giving the context) and/or a unix
    socket, and the CRLs alone on plain HTTP (`crl_http`), until cancelled.
    `task_status.started({"https": (host, port), "unix": path, "crl": (host, port)})` after
    the `listening` log line (port 0 picks a free port)."""
    log = log or JsonLog()
    app = EstApp(signer, lambda: check_utc(clock()))
    listeners: list[tuple[trio.abc.Listener, str]] = []
    bound: dict[str, object] = {}
    for kind, address in (("https", https), ("crl", crl_http)):
        if address is None:
            continue
        if kind == "https":
            if tls is None:
                raise ValueError("an HTTPS listener needs a TLS context provider")
            tls()  # an unusable certificate fails the start, not the first connection
        tcp = await trio.open_tcp_listeners(address[1], host=address[0])
        listeners += [(lst, kind) for lst in tcp]
        name = tcp[0].socket.getsockname()
        bound[kind] = (name[0], name[1])
    if unix is not None:
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        unix.unlink(missing_ok=True)
        await sock.bind(str(unix))
        os.chmod(unix, unix_mode)
        sock.listen(64)
        listeners.append((trio.SocketListener(sock), "unix"))
        bound["unix"] = str(unix)
    if not listeners:
        raise ValueError("nothing to listen on: give an HTTPS address or a unix socket")
    open_count = [0]

    async def handle(stream: trio.abc.Stream, kind: str) -> None:
        if open_count[0] >= limits.max_connections:
            signer.count("connections_refused")
            await trio.aclose_forcefully(stream)
            return
        open_count[0] += 1
        try:
            if kind == "crl":  # anyone may fetch a CRL, and nothing else here
                await _Conn(stream, app.crls, Peer(None), limits, log).run()
                return
            der = None
            if kind == "https":
                stream = trio.SSLStream(stream, tls(), server_side=True)  # type: ignore[arg-type]
                try:
                    with trio.fail_after(limits.handshake_timeout):
                        await stream.do_handshake()
                except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
                    signer.count("handshakes_refused")
                    return
                der = stream.getpeercert(binary_form=True)
            peer = identify(der, signer, unix=kind == "unix", now=check_utc(clock()))
            await _Conn(stream, app, peer, limits, log).run()
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError,
                h11.LocalProtocolError):
            pass
        except Exception as exc:  # a bug handling one connection ends only that connection
            signer.count("internal_errors")
            log.emit("internal_error", detail=f"{type(exc).__name__}: {exc}")
        finally:
            open_count[0] -= 1
            with trio.move_on_after(1.0, shield=True):
                try:
                    await stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

    async def housekeeping() -> None:
        while True:
            now = check_utc(clock())
            try:
                if n := signer.sweep(now):
                    log.emit("superseded", revoked=n)
                this_update = signer.home.load_crl().last_update_utc
                if now - this_update >= limits.crl_refresh:
                    signer.home.write_crl(now)
                    log.emit("crl_refreshed")
            except Exception as exc:  # the inventory busy, the disk full: try next round
                log.emit("housekeeping_failed", detail=f"{type(exc).__name__}: {exc}")
            await trio.sleep(limits.sweep_interval)

    async with trio.open_nursery() as nursery:
        for lst, kind in listeners:
            nursery.start_soon(trio.serve_listeners, lambda s, k=kind: handle(s, k), [lst])
        nursery.start_soon(housekeeping)
        log.emit("listening", **{k: (f"{v[0]}:{v[1]}" if isinstance(v, tuple) else v)
                                 for k, v in bound.items()})
        task_status.started(bound)
