"""The API core: a `Request` in, a `Response` out, reading the store and calling two hooks.

Theory of operation. `Api.handle(request)` matches the route (routes.py), refuses a
protected route without an operator (401 no certificate, 403 any other certificate), then
runs the endpoint method named by the route. Endpoints raise `ApiError` for every refusal;
`handle` turns it into the error document. Nothing here touches a socket: the server loop
(server.py) feeds requests in order and writes responses out, streaming `Response.stream`.

Side effects go through hooks, so this core runs without an MQTT side in tests:
- `control(value, data, operator) -> ControlOutcome`: validate (ingest), store the Control
  state, publish it retained QoS 1 into the device's jail; raises `ReadingRejected`. With
  a `correlation_id` (MQTT 5 request/response, `gateway.commands`) the command carries a
  response topic and the id as correlation data; `command(id)` reads it back with the
  device's answer.
- `erase(network, operator) -> EraseOutcome`: bar the identity, close its live sessions,
  erase its rows. `wiring.py` builds both from the running gateway.

Paging: lists and history are keyset-paginated (`cursor.py`); history and export are
streamed page by page from the store (`page` rows per read), never built whole.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from gateway.commands import MAX_CORRELATION_ID
from gateway.ingest.errors import ReadingRejected, RejectCode
from gateway.ingest.readings import parse_timestamp
from gateway.model.declarations import ValueType
from gateway.model.tree import StateKind
from gateway.storage.records import StateRecord

from . import documents as doc
from .auth import Operator
from .bars import BarList
from .certs import InventoryLookup
from .cursor import decode_cursor, encode_cursor
from .errors import ApiError, bad_request, not_found
from .messages import Request, Response, dumps, error_response, json_response, stream_response
from .metrics import CONTENT_TYPE, MetricsSource, render
from .routes import match

MAX_PAGE = 1000  # networks per page
MAX_HISTORY = 100_000  # history rows per answer (streamed)


@dataclass(frozen=True, slots=True)
class ControlOutcome:
    network: UUID
    device: UUID | None
    topic: str  # device-relative control topic
    data: str  # as stored (normalised by validation)
    timestamp: datetime
    device_online: bool
    correlation_id: str | None = None
    response_topic: str | None = None  # device-relative, where an MQTT 5 device answers


@dataclass(frozen=True, slots=True)
class EraseOutcome:
    erased: bool  # False: the store knew nothing about the network
    sessions_closed: int


class Hooks(Protocol):
    async def control(self, value: UUID, data: Any, operator: Operator,
                      correlation_id: str | None = None) -> ControlOutcome: ...

    def command(self, correlation_id: str) -> Any:
        """The correlated command (`gateway.commands.Command`) or None."""

    async def erase(self, network: UUID, operator: Operator) -> EraseOutcome: ...


def _correlation_id(text: object) -> bool:
    return (isinstance(text, str) and 0 < len(text) <= MAX_CORRELATION_ID
            and text.isprintable())


def _int(query: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or not lo <= int(text) <= hi:
        raise bad_request(f"{name} must be an integer from {lo} to {hi}", "bad_parameter")
    return int(text)


def _time(query: dict[str, str], name: str) -> datetime | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        return parse_timestamp(text)
    except ReadingRejected:
        raise bad_request(f"{name} must be an RFC 3339 date-time with an offset",
                          "bad_parameter") from None


def _choice(query: dict[str, str], name: str, default: str | None, allowed: tuple[str, ...]
            ) -> str | None:
    text = query.get(name, default)
    if text is not None and text not in allowed:
        raise bad_request(f"{name} must be one of {', '.join(allowed)}", "bad_parameter")
    return text


def _only(query: dict[str, str], *names: str) -> None:
    extra = sorted(set(query) - set(names))
    if extra:
        raise bad_request(f"unknown parameter {extra[0]!r}", "bad_parameter")


class Api:
    """The endpoints. `openapi` is the document served at /api/v1/openapi.json."""

    def __init__(self, store: Any, *, hooks: Hooks | None = None,
                 metrics: MetricsSource | None = None, bars: BarList | None = None,
                 openapi: dict[str, Any] | None = None, page: int = 1000,
                 certificates: InventoryLookup | None = None,
                 on_error: Callable[[BaseException], None] | None = None,
                 on_action: Callable[..., Awaitable[None]] | None = None) -> None:
        from .openapi import openapi_document

        self.store = store
        self.hooks = hooks
        self.metrics_source = metrics
        self.bars = bars if bars is not None else BarList()
        self.openapi_doc = openapi if openapi is not None else openapi_document()
        self.page = page
        self.certificates = certificates or InventoryLookup(None)
        self.on_error = on_error
        self.on_action = on_action
        self.console: Any = None  # gateway.console.Console: answers /console and below

    async def handle(self, request: Request) -> Response:
        """Answer one request; never raises for anything a client can send.

        Every request that changes something (any method but GET and HEAD) that reached a
        route is reported to `on_action` once answered: who, what, on which UUID, the status.
        """
        if self.console is not None and (request.path == "/console"
                                         or request.path.startswith("/console/")):
            return await self.console.handle(request)  # its own routes, auth and logging
        route = None
        params: dict[str, Any] = {}
        try:
            route, params = match(request.method, request.path)
            if route.operator_only and request.operator is None:
                raise request.refusal or ApiError(401, "certificate_required",
                                                  "an operator certificate is required")
            endpoint = getattr(self, route.endpoint)
            response = await endpoint(request, **params)
        except ApiError as exc:
            response = error_response(exc)
        if route is not None and route.method not in ("GET", "HEAD") and self.on_action:
            await self.on_action(
                operator=request.operator.name if request.operator else None,
                action=route.endpoint, method=route.method, path=request.path,
                target=next((str(v) for v in params.values()), None),
                status=response.status)
        return response

    # -- service ------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return json_response(200, {"status": "ok"})

    async def metrics(self, request: Request) -> Response:
        samples = list(self.metrics_source()) if self.metrics_source else []
        return Response(200, (("content-type", CONTENT_TYPE),), render(samples))

    async def openapi(self, request: Request) -> Response:
        return json_response(200, self.openapi_doc)

    # -- networks -----------------------------------------------------------------------

    async def list_networks(self, request: Request) -> Response:
        q = request.query
        _only(q, "status", "limit", "cursor")
        limit = _int(q, "limit", 100, 1, MAX_PAGE)
        status = _choice(q, "status", None, ("online", "offline"))
        after = None
        if "cursor" in q:
            pos = decode_cursor(q["cursor"], "networks")
            try:
                after = UUID(str(pos.get("after")))
            except ValueError:
                raise ApiError(400, "bad_cursor", "cursor is not one this endpoint returned"
                               ) from None
            if pos.get("status") != status:
                raise bad_request("the cursor belongs to another status filter", "bad_cursor")
        found: list[Any] = []
        more = False
        scan_after = after
        # With a status filter, read pages until `limit` match (keyset: each row once).
        while True:
            page = await self.store.list_networks(limit=limit + 1, after=scan_after)
            for s in page:
                if status is None or (s.online == (status == "online")):
                    if len(found) == limit:
                        more = True
                        break
                    found.append(s)
                scan_after = s.network
            if more or len(page) < limit + 1:
                break
        cursor = (encode_cursor({"k": "networks", "after": str(found[-1].network),
                                 "status": status}) if more else None)
        expiry = await self.certificates.not_after(s.cert_serial for s in found)
        return json_response(200, {"networks": [doc.status_json(s, expiry) for s in found],
                                   "next_cursor": cursor})

    async def get_network(self, request: Request, uuid: UUID) -> Response:
        _only(request.query)
        tree = await self.store.get_tree(uuid)
        status = await self.store.connection_status(uuid)
        if tree is None and status is None:
            raise not_found(f"no network {uuid}")
        latest = await self.store.latest_states(uuid)
        body = doc.tree_json(tree, latest) if tree else {"uuid": str(uuid), "devices": []}
        expiry = await self.certificates.not_after([status.cert_serial] if status else [])
        body["status"] = doc.status_json(status, expiry) if status else None
        return json_response(200, {"network": body})

    async def get_device(self, request: Request, uuid: UUID) -> Response:
        _only(request.query)
        found = await self.store.find_device(uuid)
        if found is None:
            raise not_found(f"no device {uuid}")
        network, device = found
        latest = await self.store.latest_states(network)
        body = device.to_json()
        body["values"] = [doc.value_json(v, latest) for v in device.values]
        body["network"] = str(network)
        return json_response(200, {"device": body})

    async def get_value(self, request: Request, uuid: UUID) -> Response:
        _only(request.query)
        where = await self.store.find_value(uuid)
        if where is None:
            raise not_found(f"no value {uuid}")
        latest: dict[UUID, StateRecord] = {}
        for state in where.value.states:
            rows = await self.store.history(uuid, kind=state.kind, limit=1, newest_first=True)
            if rows:
                latest[state.uuid] = rows[0]
        body = doc.value_json(where.value, latest)
        body["device"] = str(where.device)
        body["network"] = str(where.network)
        return json_response(200, {"value": body})

    # -- history ------------------------------------------------------------------------

    async def value_reports(self, request: Request, uuid: UUID) -> Response:
        q = request.query
        _only(q, "since", "until", "limit", "cursor", "order")
        since, until = _time(q, "since"), _time(q, "until")
        if since and until and since > until:
            raise bad_request("since is after until", "bad_parameter")
        limit = _int(q, "limit", 100, 1, MAX_HISTORY)
        order = _choice(q, "order", "newest", ("newest", "oldest"))
        newest = order == "newest"
        after = None
        if "cursor" in q:
            pos = decode_cursor(q["cursor"], "reports")
            if pos.get("order") != order or pos.get("value") != str(uuid):
                raise bad_request("the cursor belongs to another value or order", "bad_cursor")
            try:
                at = datetime.fromisoformat(pos["ts"])
                row = pos["id"]
                if at.tzinfo is None or type(row) is not int or not 0 <= row < 2**63:
                    raise ValueError("not a cursor we made")
                after = StateRecord(row, uuid, StateKind.REPORT, "", at, at)
            except (KeyError, TypeError, ValueError):
                raise ApiError(400, "bad_cursor", "cursor is not one this endpoint returned"
                               ) from None
        where = await self.store.find_value(uuid)
        if where is None:
            raise not_found(f"no value {uuid}")
        head = {"value": str(uuid), "order": order, "since": doc.ts(since),
                "until": doc.ts(until)}
        return stream_response(200, self._history_stream(
            uuid, where.value.decl.type, head, since, until, limit, newest, after, order))

    async def _history_stream(self, value: UUID, value_type: ValueType, head: dict[str, Any],
                              since: datetime | None, until: datetime | None, limit: int,
                              newest: bool, after: StateRecord | None, order: str
                              ) -> AsyncIterator[bytes]:
        yield dumps(head)[:-1] + b',"reports":['
        remaining, first, last = limit, True, None
        exhausted = False
        while remaining > 0:
            want = min(remaining, self.page)
            rows = await self.store.history(value, since=since, until=until, limit=want,
                                            newest_first=newest, after=after)
            if rows:
                parts = [dumps(doc.state_json(r, value_type)) for r in rows]
                yield (b"" if first else b",") + b",".join(parts)
                first = False
                remaining -= len(rows)
                after = last = rows[-1]
            if len(rows) < want:
                exhausted = True
                break
        if not exhausted and last is not None:
            peek = await self.store.history(value, since=since, until=until, limit=1,
                                            newest_first=newest, after=last)
            exhausted = not peek
        cursor = None
        if not exhausted and last is not None:
            cursor = encode_cursor({"k": "reports", "value": str(value), "order": order,
                                    "id": last.id, "ts": last.timestamp.isoformat()})
        yield b'],"next_cursor":' + dumps(cursor) + b"}"

    # -- control ------------------------------------------------------------------------

    async def control_value(self, request: Request, uuid: UUID) -> Response:
        _only(request.query)
        body = request.json()
        if not isinstance(body, dict) or "data" not in body:
            raise bad_request('send {"data": <string or number>}', "bad_body")
        if set(body) - {"data", "correlation_id"}:
            extra = sorted(set(body) - {"data", "correlation_id"})[0]
            raise bad_request(f"unknown field {extra!r}", "bad_body")
        correlation = body.get("correlation_id")
        if correlation is not None and not _correlation_id(correlation):
            raise bad_request(f"correlation_id is 1 to {MAX_CORRELATION_ID} printable "
                              "characters", "bad_body")
        if self.hooks is None:
            raise ApiError(503, "unavailable", "control is not wired to a broker")
        assert request.operator is not None
        try:
            if correlation is None:
                out = await self.hooks.control(uuid, body["data"], request.operator)
            else:
                out = await self.hooks.control(uuid, body["data"], request.operator,
                                               correlation_id=correlation)
        except ReadingRejected as exc:
            if exc.code is RejectCode.UNKNOWN_VALUE:
                raise not_found(f"no value {uuid}") from None
            status = 409 if exc.code is RejectCode.PERMISSION else 422
            raise ApiError(status, str(exc.code).lower(), exc.reason) from None
        return json_response(200, {
            "value": str(uuid), "network": str(out.network),
            "device": str(out.device) if out.device else None,
            "state": {"type": "Control", "data": await self._typed(uuid, out.data),
                      "timestamp": doc.ts(out.timestamp)},
            "topic": out.topic, "retained": True, "qos": 1,
            "device_online": out.device_online,
            **({"correlation_id": out.correlation_id, "response_topic": out.response_topic}
               if out.correlation_id is not None else {}),
        })

    async def control_answer(self, request: Request, uuid: UUID) -> Response:
        """A correlated command of this value and the device's answer, if it came."""
        _only(request.query, "correlation_id")
        correlation = request.query.get("correlation_id")
        if correlation is None or not _correlation_id(correlation):
            raise bad_request("correlation_id is required", "bad_parameter")
        command = self.hooks.command(correlation) if self.hooks is not None else None
        if command is None or command.value != str(uuid):
            raise not_found(f"no command {correlation!r} for value {uuid}")
        answer = None
        if command.response is not None:
            try:
                text: str | None = command.response.decode("utf-8")
            except UnicodeDecodeError:
                text = None
            answer = {"payload": text, "payload_base64": None if text is not None else
                      base64.b64encode(command.response).decode(),
                      "content_type": command.content_type,
                      "received": doc.ts(command.responded)}
        return json_response(200, {
            "correlation_id": command.correlation_id, "value": command.value,
            "network": command.network, "topic": command.topic, "sent": doc.ts(command.sent),
            "response": answer,
        })

    async def _typed(self, value: UUID, data: str) -> Any:
        where = await self.store.find_value(value)
        return data if where is None else doc.typed(where.value.decl.type, data)

    # -- portability and erasure --------------------------------------------------------

    async def export_network(self, request: Request, uuid: UUID) -> Response:
        _only(request.query)
        tree = await self.store.get_tree(uuid)
        status = await self.store.connection_status(uuid)
        if tree is None and status is None:
            raise not_found(f"no network {uuid}")
        expiry = await self.certificates.not_after([status.cert_serial] if status else [])
        return stream_response(200, self._export_stream(uuid, tree, status, expiry))

    async def _export_stream(self, network: UUID, tree: Any, status: Any,
                             expiry: dict[str, datetime]) -> AsyncIterator[bytes]:
        head = {
            "format": "fleetgate.export/1",
            "exported_at": doc.ts(datetime.now(UTC)),
            "network": str(network),
            "status": doc.status_json(status, expiry) if status else None,
            "tree": tree.to_json() if tree else {"uuid": str(network), "devices": []},
        }
        yield dumps(head)[:-1] + b',"states":['
        first = True
        for device in tree.devices if tree else ():
            for value in device.values:
                for state in value.states:
                    after = None
                    while True:
                        rows = await self.store.history(value.uuid, kind=state.kind,
                                                        limit=self.page, after=after)
                        if rows:
                            parts = []
                            for r in rows:
                                item = doc.state_json(r, value.decl.type)
                                item = {"state": str(state.uuid), "value": str(value.uuid),
                                        "device": str(device.uuid), **item}
                                parts.append(dumps(item))
                            yield (b"" if first else b",") + b",".join(parts)
                            first = False
                            after = rows[-1]
                        if len(rows) < self.page:
                            break
        events = await self.store.connection_history(network, limit=1_000_000)
        serials = sorted({e.cert_serial for e in events if e.cert_serial}
                         | ({status.cert_serial} if status and status.cert_serial else set()))
        retained = await self.store.retained(network)
        sessions = await self.store.load_sessions(network)
        yield (b'],"connections":' + dumps([doc.event_json(e) for e in events])
               + b',"certificate_serials":' + dumps(serials)
               + b',"retained":' + dumps([doc.retained_json(m) for m in retained])
               + b',"sessions":' + dumps([doc.session_json(s) for s in sessions]) + b"}")

    async def erase_network(self, request: Request, uuid: UUID) -> Response:
        _only(request.query)
        if self.hooks is None:
            raise ApiError(503, "unavailable", "erasure is not wired to the gateway")
        assert request.operator is not None
        out = await self.hooks.erase(uuid, request.operator)
        if not out.erased:
            raise not_found(f"no network {uuid} in the store (nothing erased; not barred)")
        return json_response(200, {
            "network": str(uuid), "erased": True, "barred": uuid in self.bars,
            "sessions_closed": out.sessions_closed,
            "next_step": f"revoke its certificate: fleet-ca revoke {uuid} "
                         f"(the bar lasts until DELETE /api/v1/bars/{uuid})",
        })

    # -- bars ---------------------------------------------------------------------------

    async def list_bars(self, request: Request) -> Response:
        _only(request.query)
        return json_response(200, {"barred": [
            {"network": str(b.network), "since": doc.ts(b.since), "by": b.by}
            for b in self.bars.all()]})

    async def lift_bar(self, request: Request, uuid: UUID) -> Response:
        _only(request.query)
        if not self.bars.lift(uuid):
            raise not_found(f"network {uuid} is not barred")
        return json_response(200, {"network": str(uuid), "barred": False})
