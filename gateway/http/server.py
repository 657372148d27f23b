"""The HTTPS listener: one trio task per connection around h11 and the `Api` core.

Theory of operation (the shape of h11's examples/trio-server.py), per accepted connection:

1. Admission: a new connection over its source's accept rate or the listener's
   (`connection_rate_per_source`, `connection_rate`: `AcceptRates`) is closed at once,
   before any TLS work. Then, until it shows an operator certificate (or a request of it is
   answered as of a signed-in console session, `Response.signed_in`) it is pending, in a pool
   capped per source address and in total (`max_pending`, `max_pending_per_source`); when
   full, the oldest pending connection is dropped, never an authenticated one. TLS: once the first
   bytes arrive, an `SSLStream` on the context current then (server certificate, client
   certificate optional but verified against our root and CRL when sent), `do_handshake()`
   under `handshake_timeout`. A failed handshake (unknown CA, revoked, expired) is counted
   and closed: it never reaches HTTP.
2. Identity, once per connection: `auth.authenticate` gives an `Operator` or the 401/403
   every protected route answers. /healthz needs none.
3. The request loop (RFC 9112): read one request head under `header_timeout` for operators,
   `unauthenticated_header_timeout` otherwise (this is also the keep-alive idle deadline),
   its body under `body_timeout`, at most `max_header_bytes`
   and `max_body_bytes` (431 and 413, then close). Requests are answered strictly one after
   another, so pipelined requests (h11 buffers the bytes behind the current one) get their
   responses in order. A malformed request gets 400 (h11's status hint) and a clean close.
4. The response: `Response.body` whole with a Content-Length, or `Response.stream` as chunked
   `Data` events, one per chunk the core yields, each sent under `send_timeout`. A failure
   in the middle of a stream cannot change the status any more: the connection is cut
   without the final chunk, which clients see as a truncated answer, never as a complete one.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

import h11
import trio

from gateway.admission import handshake, send_alert
from gateway.errors import AdmissionRefused
from gateway.limits import AcceptRates, PendingPool, SourceRates, TokenBucket, source_key

from ..listeners import open_tcp_listeners
from ..metrics import HTTP_RATE_LIMITS, HttpMetrics
from .api import Api
from .auth import Operator, authenticate
from .errors import ApiError
from .messages import Request, Response, error_response

TLSProvider = Callable[[], tuple[ssl.SSLContext, frozenset[int]]]
"""Returns (the current server context, the current CRL's revoked serials)."""

RECEIVE_SIZE = 64 * 1024
SERVER_HEADER = ("server", "fleetgate")


@dataclass(frozen=True, slots=True)
class HttpLimits:
    handshake_timeout: float = 5.0
    header_timeout: float = 30.0  # a request head, or keep-alive idleness between requests
    unauthenticated_header_timeout: float = 5.0  # the same without an operator certificate
    body_timeout: float = 30.0
    send_timeout: float = 60.0  # per chunk written
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 64 * 1024
    max_connections: int = 256  # authenticated connections (operator certificate, console
    # session); the others live in the pending pool
    max_pending: int = 1_024  # unauthenticated connections (see PendingPool)
    max_pending_per_source: int = 32
    connection_rate: float = 200.0  # new connections per second, in total ...
    connection_burst: int = 400
    connection_rate_per_source: float = 50.0  # ... and per source (see AcceptRates)
    connection_burst_per_source: int = 200


def route_class(path: str) -> str:
    """The label /metrics gives a request's duration: never the raw path (unbounded)."""
    if path.startswith("/api/"):
        return "api"
    if path == "/console" or path.startswith("/console/"):
        return "console"
    if path == "/healthz":
        return "health"
    return "metrics" if path == "/metrics" else "other"


class _Close(Exception):
    """Internal: end this connection (after an error response, or on a broken stream)."""


class HttpStatistics:
    """The listener's shared state: its metrics (`gateway.metrics.HttpMetrics`, the
    gateway's `metrics.http` when served beside it), the authenticated connections counted
    against `max_connections`, and the pending pool."""

    def __init__(self, limits: HttpLimits | None = None,
                 metrics: HttpMetrics | None = None) -> None:
        limits = limits if limits is not None else HttpLimits()
        self.metrics = metrics if metrics is not None else HttpMetrics()
        self.operator_connections = 0  # operator certificates, and signed-in console sessions
        self.pending = PendingPool(limits.max_pending, limits.max_pending_per_source)
        self.accepts = AcceptRates(
            SourceRates(limits.connection_rate_per_source, limits.connection_burst_per_source),
            TokenBucket(limits.connection_rate, limits.connection_burst, 0.0),
            HTTP_RATE_LIMITS)


class _Connection:
    def __init__(self, stream: trio.SSLStream, api: Api, limits: HttpLimits,
                 operator: Operator | None, refusal: ApiError | None,
                 stats: HttpStatistics, tls: TLSProvider,
                 sign_in: Callable[[], bool] = lambda: False) -> None:
        self.stream = stream
        self.sign_in = sign_in  # leave the pending pool; False: no room for it
        self.signed_in = False
        self.header_timeout = (limits.header_timeout if operator is not None
                               else limits.unauthenticated_header_timeout)
        self.tls = tls
        self.api = api
        self.limits = limits
        self.operator = operator
        self.refusal = refusal
        self.stats = stats
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)

    async def _next_event(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            self.conn.receive_data(data)

    async def _send(self, event: Any) -> None:
        data = self.conn.send(event)
        if data:
            with trio.fail_after(self.limits.send_timeout):
                await self.stream.send_all(data)

    async def run(self) -> None:
        while True:
            try:
                request = await self._read_request()
            except h11.RemoteProtocolError as exc:
                self.stats.metrics.bad_requests.inc()
                await self._refuse(ApiError(exc.error_status_hint, "malformed_request",
                                            str(exc) or "malformed HTTP request"))
                return
            except ApiError as exc:
                self.stats.metrics.bad_requests.inc()
                await self._refuse(exc)
                return
            if request is None:
                return  # the client closed, or stayed idle past the deadline
            self.stats.metrics.requests.inc()
            started = trio.current_time()
            if self.operator is not None and self.operator.serial in self.tls()[1]:
                # Revoked while this keep-alive connection was open: no more answers for it.
                self.operator = None
                self.refusal = ApiError(403, "certificate_revoked",
                                        "this operator certificate is revoked")
            request = replace(request, operator=self.operator, refusal=self.refusal)
            try:
                response = await self.api.handle(request)
            except Exception as exc:  # a bug or a failed store: this request only
                self.stats.metrics.internal_errors.inc()
                if self.api.on_error is not None:
                    self.api.on_error(exc)
                response = error_response(ApiError(500, "internal_error",
                                                   f"internal error ({type(exc).__name__})"))
            self.stats.metrics.responses.inc(response.status // 100)
            if response.signed_in and not self.signed_in and self.sign_in():
                # A console session: no longer crowded out by unauthenticated connections.
                self.signed_in = True
                self.header_timeout = self.limits.header_timeout
            await self._respond(response)
            self.stats.metrics.request_seconds[route_class(request.path)].observe(
                trio.current_time() - started)
            if response.close or self.conn.our_state is h11.MUST_CLOSE:
                return
            try:
                self.conn.start_next_cycle()
            except h11.LocalProtocolError:
                return  # the client has not finished its request: no keep-alive

    async def _read_request(self) -> Request | None:
        try:
            with trio.fail_after(self.header_timeout):
                event = await self._next_event()
        except trio.TooSlowError:
            if self.conn.their_state is h11.IDLE and not self.conn.trailing_data[0]:
                return None  # idle keep-alive connection: just close
            raise ApiError(408, "request_timeout", "the request head took too long") from None
        if isinstance(event, h11.ConnectionClosed):
            return None
        assert isinstance(event, h11.Request)
        # h11's max_incomplete_event_size only sees a head still incomplete after a read; a
        # whole head arriving in one read is measured here (request line, fields, CRLFs).
        head = len(event.method) + len(event.target) + 12 + sum(
            len(name) + len(value) + 4 for name, value in event.headers)
        if head > self.limits.max_header_bytes:
            raise ApiError(431, "header_too_large",
                           f"request heads are limited to {self.limits.max_header_bytes} bytes")
        headers = {k.decode("latin-1"): v for k, v in event.headers}
        length = headers.get("content-length")
        if length is not None and int(length) > self.limits.max_body_bytes:
            raise ApiError(413, "body_too_large",
                           f"request bodies are limited to {self.limits.max_body_bytes} bytes")
        body = bytearray()
        if self.conn.they_are_waiting_for_100_continue:
            await self._send(h11.InformationalResponse(status_code=100, headers=[]))
        try:
            with trio.fail_after(self.limits.body_timeout):
                while True:
                    part = await self._next_event()
                    if isinstance(part, h11.Data):
                        body += part.data
                        if len(body) > self.limits.max_body_bytes:
                            raise ApiError(413, "body_too_large", "request body too large")
                    elif isinstance(part, h11.EndOfMessage):
                        break
                    elif isinstance(part, h11.ConnectionClosed):
                        raise _Close()
        except trio.TooSlowError:
            raise ApiError(408, "request_timeout", "the request body took too long") from None
        try:
            target = event.target.decode("ascii")
            method = event.method.decode("ascii")
        except UnicodeDecodeError:
            raise ApiError(400, "bad_target", "non-ASCII request target") from None
        ctype = headers.get("content-type")
        return Request.from_target(
            method, target, body=bytes(body),
            content_type=ctype.decode("latin-1") if ctype is not None else None,
            operator=self.operator, refusal=self.refusal,
            headers={k: v.decode("latin-1") for k, v in headers.items()}, peer=self._peer())

    def _peer(self) -> str:
        """The client's address (for the console's per-address login limit)."""
        try:
            return str(self.stream.transport_stream.socket.getpeername()[0])
        except (OSError, AttributeError, IndexError):
            return ""

    async def _refuse(self, error: ApiError) -> None:
        """Answer an unusable request (if h11 still lets us) and close."""
        self.stats.metrics.responses.inc(error.status // 100)
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            try:
                await self._respond(error_response(error, close=True))
            except (h11.LocalProtocolError, trio.TooSlowError):
                pass

    async def _respond(self, response: Response) -> None:
        headers = [SERVER_HEADER, *response.headers]
        if response.close:
            headers.append(("connection", "close"))
        if response.stream is None:
            headers.append(("content-length", str(len(response.body))))
        if response.stream is None:
            await self._send(h11.Response(status_code=response.status, headers=headers))
            if response.body:
                await self._send(h11.Data(data=response.body))
        else:
            # aclosing: a generator left half-way (client gone, store failed) is closed here,
            # inside this task, not later by the garbage collector after trio has stopped.
            async with aclosing(response.stream) as chunks:
                await self._send(h11.Response(status_code=response.status, headers=headers))
                async for chunk in chunks:
                    if chunk:
                        await self._send(h11.Data(data=chunk))
        await self._send(h11.EndOfMessage())


async def serve_http(
    address: tuple[str, int],
    tls: TLSProvider,
    store: Any,
    *,
    hooks: Any = None,
    metrics: Callable[[], Any] | None = None,
    bars: Any = None,
    limits: HttpLimits = HttpLimits(),
    certificates: Any = None,
    log: Any = None,
    stats: HttpStatistics | None = None,
    console: Callable[[Api], Any] | None = None,
    audit: Any = None,
    reuse_port: bool = False,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the HTTP API over TLS on `address` until cancelled.

    `tls()` is asked for the context at every accept (so CRL and certificate reloads apply
    to new connections); `hooks` performs control and erasure (`wiring.GatewayHooks`);
    `metrics()` gives the /metrics samples; `certificates` (certs.InventoryLookup) adds
    certificate expiry to network status; `audit` (gateway.audit.AuditTrail) records every
    request that changed something before it is answered. `reuse_port`: bind with
    SO_REUSEPORT (the processes of `serve --workers` share the port).
    `task_status.started((host, port))` reports the bound address (port 0 picks a free one)
    after the `listening` log line.
    """
    stats = stats if stats is not None else HttpStatistics(limits)

    def on_error(exc: BaseException) -> None:
        if log is not None:
            log.emit("http_internal_error", detail=f"{type(exc).__name__}: {exc}")

    async def on_action(**fields: Any) -> None:
        if log is not None:
            log.emit("operator_action", **fields)
        if audit is not None:  # gateway.audit.AuditTrail: what changed state, durably
            await audit.action(fields)

    api = Api(store, hooks=hooks, metrics=metrics, bars=bars, certificates=certificates,
              on_error=on_error, on_action=on_action)
    if console is not None:  # gateway.console: /console/ on this listener
        api.console = console(api)
    tls()  # an unusable certificate or CRL fails the start, not the first connection
    host, port = address
    try:
        listeners = await open_tcp_listeners(port, host=host, reuse_port=reuse_port)
    except OSError as exc:  # named, so the CLI can say which listener failed
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise OSError(exc.errno, exc.strerror, where) from exc
    sockname = listeners[0].socket.getsockname()
    bound = (sockname[0], sockname[1])
    shown = f"[{bound[0]}]:{bound[1]}" if ":" in bound[0] else f"{bound[0]}:{bound[1]}"
    if log is not None:
        log.emit("listening", http=shown)
    task_status.started(bound)

    async def handle(tcp: trio.SocketStream) -> None:
        try:
            await _serve_connection(tcp, tls, api, limits, stats, log)
        except Exception as exc:  # one connection's bug must never stop the listener
            stats.metrics.internal_errors.inc()
            on_error(exc)
            await trio.aclose_forcefully(tcp)

    await trio.serve_listeners(handle, listeners)


async def _serve_connection(tcp: trio.SocketStream, tls: TLSProvider, api: Api,
                            limits: HttpLimits, stats: HttpStatistics, log: Any) -> None:
    """One connection: pending (pool, short deadlines) until an operator certificate."""
    try:
        peer = tcp.socket.getpeername()[0]
    except OSError:
        await trio.aclose_forcefully(tcp)
        return
    source = source_key(peer)
    refused = stats.accepts.refuse(source, trio.current_time())
    if refused is not None:  # closed before any TLS work: counted, not logged (a flood)
        stats.metrics.throttled.inc(refused)
        await trio.aclose_forcefully(tcp)
        return
    stats.metrics.connections_open.inc()
    stats.metrics.connections.inc()
    # Until it shows an operator certificate a connection lives in the pending pool; when
    # the pool (or its source's share) is full, the oldest pending connection is dropped.
    scope = trio.CancelScope()
    for victim, limit in stats.pending.admit(scope, source):
        stats.metrics.pending_evicted.inc(limit)
        victim.cancel()  # type: ignore[attr-defined]
    stream: trio.abc.AsyncResource = tcp
    authenticated = False
    try:
        with scope:
            revoked: frozenset[int] = frozenset()

            def context() -> ssl.SSLContext:
                nonlocal revoked
                current, revoked = tls()
                return current

            try:
                # The same unauthenticated phase as the MQTT listener's (gateway.admission).
                stream = ssl_stream = await handshake(tcp, context, limits.handshake_timeout)
            except AdmissionRefused as refused:
                stats.metrics.handshakes_refused.inc()
                await send_alert(tcp, refused)
                return
            der = ssl_stream.getpeercert(binary_form=True)
            who = authenticate(der, revoked)
            operator = who if isinstance(who, Operator) else None
            refusal = who if isinstance(who, ApiError) else None
            def signed_in() -> bool:
                nonlocal authenticated
                if stats.operator_connections >= limits.max_connections:
                    return False
                stats.pending.release(scope)
                stats.operator_connections += 1
                authenticated = True
                return True

            if operator is not None and not signed_in():
                stats.metrics.connections_refused.inc()
                return
            try:
                await _Connection(ssl_stream, api, limits, operator, refusal, stats, tls,
                                  signed_in).run()
            except (_Close, trio.BrokenResourceError, trio.ClosedResourceError,
                    trio.TooSlowError, h11.LocalProtocolError):
                pass
            except Exception as exc:  # a stream generator failed mid-answer: cut this one
                stats.metrics.internal_errors.inc()
                api.on_error and api.on_error(exc)
    finally:
        stats.pending.release(scope)
        stats.metrics.connections_open.dec()
        if authenticated:
            stats.operator_connections -= 1
        with trio.move_on_after(1.0, shield=True):
            try:
                await stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
