"""The console's requests: session, CSRF and ownership checks, then one handler per page.

Isolation between owners: every network, value or export an owner asks for is checked with
`AccountsBase.owns` first; anything not theirs answers exactly as a network that does not
exist (404), so a guessed UUID tells nothing. Operators see the whole fleet.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any
from uuid import UUID

import trio

from ..accounts import AccountError, AccountsBase, BadLogin, OwnerCodeRefused
from ..accounts.store import Account, Session
from ..config import GatewayConfig
from ..http.auth import Operator
from ..http.documents import status_json
from ..http.messages import JSON, Request, Response
from ..metrics import ConsoleMetrics
from . import audit, charts, claim, figures, fleet, guard, pages, revoke, signup

STATIC = {"console.css": "text/css; charset=utf-8",
          "console.js": "text/javascript; charset=utf-8"}
HTML = "text/html; charset=utf-8"

_NETWORK = re.compile(r"^/console/networks/([0-9a-f-]{36})(/erase|/revoke)?$")
_CHART = re.compile(r"^/console/values/([0-9a-f-]{36})/chart$")
_VALUE = re.compile(r"^/console/values/([0-9a-f-]{36})/control$")
_SESSION = re.compile(r"^/console/account/sessions/([0-9a-f]{16})/revoke$")


class _NotFound(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Who:
    account: Account
    session: Session
    token: str

    @property
    def label(self) -> str:
        return f"{self.account.role}:{self.account.id}"

    @property
    def operator(self) -> Operator:
        return Operator(f"console:{self.label}", 0)


class Console:
    def __init__(self, api: Any, accounts: AccountsBase, *, limiter: trio.CapacityLimiter,
                 config: GatewayConfig | None = None,
                 monotonic: Callable[[], float] = trio.current_time,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC),
                 metrics: ConsoleMetrics | None = None, activity: Any = None,
                 signer: Any = None) -> None:
        self.api = api
        self.activity, self.signer = activity, signer  # gateway.activity, SignerClient
        self.accounts = accounts
        self.limiter = limiter
        self.config = c = config if config is not None else GatewayConfig()
        window = dict(window=c.console_login_window, tracked=c.console_login_tracked)
        self.logins = guard.LoginLimiter(monotonic, failures=c.console_login_failures, **window)
        self.claims = guard.LoginLimiter(monotonic, failures=c.console_login_failures, **window)
        self.signups = guard.LoginLimiter(monotonic, failures=c.console_signups_per_address,
                                          **window)
        self.wall = wall
        self.metrics = metrics if metrics is not None else ConsoleMetrics()
        self._idle_us = int(c.console_session_idle * 1_000_000)
        self._streams = 0
        self._streams_of: dict[int, int] = {}
        # Set (and replaced) when an account's sessions change: its streams re-check theirs.
        self._wake: dict[int, trio.Event] = {}

    async def call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return await trio.to_thread.run_sync(lambda: fn(*args, **kw), limiter=self.limiter)

    _call = call

    def _kick(self, account_id: int) -> None:
        """Wake the account's live-update streams now (a session of it ended)."""
        event = self._wake.pop(account_id, None)
        if event is not None:
            event.set()

    # -- dispatch ---------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        path, method = request.path, request.method
        if path.startswith("/console/static/"):
            return self._static(path.removeprefix("/console/static/"))
        if path == "/console" and method == "GET":
            return _redirect("/console/")
        if path == "/console/claim" and method == "GET":
            return claim.landing(request)  # a label's QR code: no session needed (claim.py)
        if path == "/console/login" and method == "GET":
            return self._login_page()
        if path == "/console/login" and method == "POST":
            return await self._login(request)
        if path == "/console/signup" and self.config.console_signup:
            if method == "GET":
                return signup.page(self)
            if method == "POST":
                return await signup.signup(self, request)
        who = await self._who(request)
        if who is None:
            if method == "GET":
                return _redirect("/console/login")
            return _html(403, pages.layout("Forbidden", pages.message(
                "your session has ended: log in again")))
        return dataclasses.replace(await self._signed_in(request, who), signed_in=True)

    async def _signed_in(self, request: Request, who: _Who) -> Response:
        """Answer a request of a valid session (the connection leaves the unauthenticated
        pool with it: `Response.signed_in`)."""
        method = request.method
        if method == "POST":
            fields = guard.form(request.body)
            if not guard.same_token(who.session.csrf, fields.get("csrf")):
                response = _html(403, pages.layout("Forbidden", pages.message(
                    "this form is stale or was not sent by the console (CSRF token)"),
                    who=who.account.email, csrf=who.session.csrf))
            else:
                try:
                    response = await self._post(request, who, fields)
                except _NotFound:
                    response = self._not_found(who)
            await self.audit(who.label, request, response.status,
                             dict(response.headers).get("location", ""))
            return response
        if method != "GET":
            return _html(405, pages.layout("Method not allowed", ""))
        try:
            return await self._get(request, who)
        except _NotFound:
            return self._not_found(who)

    async def _get(self, request: Request, who: _Who) -> Response:
        path = request.path
        if path == "/console/":
            flt = fleet.Filter.of(request.query)
            page = await self._fleet(who, flt)
            more = flt.query(after=page.next_after) if page.next_after else None
            return self._page(who, "Fleet", pages.overview(
                page.networks, who.session.csrf, who.account.role, flt=flt, more=more,
                activity=await figures.overall(self, who, hour=True),
                code=claim.pending(request)))
        if path == "/console/events":
            return await self._events(who, fleet.Filter.of(request.query))
        if path == "/console/account":
            sessions = [_SessionView(s) for s in
                        await self._call(self.accounts.sessions_of, who.account.id)]
            me = {"email": who.account.email, "role": who.account.role,
                  "details": who.account.details}
            return self._page(who, "Account", pages.account(me, sessions, who.session.id,
                                                            who.session.csrf))
        if path == "/console/audit" and who.account.role == "operator":
            return self._page(who, *await audit.page(self.api.store, request.query))
        if path == "/console/accounts" and who.account.role == "operator":
            rows = await self._call(self.accounts.all)
            return self._page(who, "Accounts", pages.accounts(
                [(i, role, _iso(created)) for i, role, created in rows]))
        if path == "/console/account/export":
            return await self._export(who)
        if path == "/console/account/report":
            return self._page(who, "Access report", await self._report(who))
        m = _NETWORK.match(path)
        if m and not m.group(2):
            uuid = await self._owned(who, m.group(1))
            doc = await self._api_json(self.api.get_network, uuid, key="network")
            try:
                span = charts.parse_range(request.query, self.wall())
            except charts.BadRange as exc:
                return self._page(who, "Bad time range", pages.message(str(exc)), status=400)
            return self._page(who, "Network", pages.network(
                doc, await self._charts(doc, span), who.session.csrf,
                charts.range_picker(path, span), revoke.section(
                    str(uuid), who.session.csrf, signer=self.signer is not None,
                    operator=who.account.role == "operator")))
        if m := _CHART.match(path):
            value = await self._owned_value(who, m.group(1))
            try:
                span = charts.parse_range(request.query, self.wall())
            except charts.BadRange as exc:
                return _html(400, pages.layout("Bad time range", pages.message(str(exc))))
            drawn = await self._chart(value, span, standalone=True)
            return Response(200, (("content-type", "image/svg+xml"), *guard.SECURITY_HEADERS),
                            (drawn or '<svg xmlns="http://www.w3.org/2000/svg" '
                             'data-points="0"/>').encode())
        raise _NotFound

    async def _post(self, request: Request, who: _Who, fields: dict[str, str]) -> Response:
        path = request.path
        if path == "/console/logout":
            await self._call(self.accounts.end_session, who.token)
            self._kick(who.account.id)
            return _redirect("/console/login", guard.clear_cookie(guard.SESSION_COOKIE))
        if path == "/console/claim":
            if who.account.role != "owner":
                raise _NotFound
            if self.claims.locked(who.account.id):
                self.metrics.claims_locked.inc()
                return self._page(who, "Not claimed", pages.message(
                    "too many wrong owner codes: wait 15 minutes"), status=429)
            try:
                network = await self._call(self.accounts.claim, who.account.id,
                                           fields.get("code", "")[:64])
            except OwnerCodeRefused as exc:
                self.claims.failed(who.account.id)
                return self._page(who, "Not claimed", pages.message(str(exc)), status=422)
            return _redirect(f"/console/networks/{network}", claim.done())
        if path == "/console/account/details":
            try:
                await self._call(self.accounts.correct, who.account.id,
                                 {k: fields.get(k, "") for k in ("name", "phone", "address")})
            except AccountError as exc:
                return self._page(who, "Not saved", pages.message(str(exc)), status=422)
            return _redirect("/console/account")
        if path == "/console/account/password":
            try:
                ended = await self._call(self.accounts.change_password, who.account.id,
                                         fields.get("old", ""), fields.get("new", ""),
                                         who.token)
            except AccountError as exc:
                return self._page(who, "Not changed", pages.message(str(exc)), status=422)
            self._kick(who.account.id)
            return self._page(who, "Password changed", pages.message(
                f"password changed; {ended} other session(s) ended"))
        if path == "/console/account/delete":
            if fields.get("confirm") != "DELETE":
                return self._page(who, "Not deleted", pages.message(
                    "type DELETE to confirm"), status=422)
            return await self._delete_account(who, erase=fields.get("networks") != "release")
        if m := _SESSION.match(path):
            await self._call(self.accounts.revoke_session, who.account.id, m.group(1))
            self._kick(who.account.id)
            return _redirect("/console/account")
        if m := _NETWORK.match(path):
            if not m.group(2):
                raise _NotFound
            uuid = await self._owned(who, m.group(1))
            if m.group(2) == "/revoke":
                title, body, status = await revoke.post(self, who, uuid, fields)
                return self._page(who, title, body, status=status)
            if fields.get("confirm", "").strip().lower() != str(uuid):
                return self._page(who, "Not erased", pages.message(
                    "type the network's UUID to confirm"), status=422)
            await self._erase(uuid, who)
            return self._page(who, "Erased", pages.message(f"network {uuid} erased"))
        if m := _VALUE.match(path):
            value = await self._owned_value(who, m.group(1))
            body = json.dumps({"data": _number_or_text(fields.get("data", ""))}).encode()
            internal = Request("POST", f"/api/v1/values/{value}/control", {}, body=body,
                               content_type=JSON, operator=who.operator)
            response = await self.api.control_value(internal, value)
            return self._page(who, "Control", pages.message(
                "sent" if response.status == 200 else
                json.loads(response.body).get("error", {}).get("message", "refused")),
                status=200 if response.status == 200 else 422)
        raise _NotFound

    # -- login ------------------------------------------------------------------------

    def _login_page(self, message: str = "", status: int = 200) -> Response:
        token = _token()
        return _html(status, pages.login(token, message, signup=self.config.console_signup),
                     guard.set_cookie(guard.LOGIN_COOKIE, token))

    async def _login(self, request: Request) -> Response:
        fields = guard.form(request.body)
        cookie = guard.cookies(dict(request.headers)).get(guard.LOGIN_COOKIE, "")
        if not guard.same_token(cookie, fields.get("csrf")):
            return self._login_page("this form is stale: try again", 403)
        email, password = fields.get("email", "")[:254], fields.get("password", "")
        keys = (self.accounts.key.lookup(email), request.peer)
        if self.logins.locked(*keys):
            self.metrics.logins_locked.inc()
            return self._login_page("too many failed logins: wait and try again", 429)
        try:
            account = await self._call(self.accounts.authenticate, email, password)
        except BadLogin:
            self.logins.failed(*keys)
            return self._login_page("unknown email or wrong password", 401)
        self.logins.succeeded(*keys)
        token, _ = await self._call(self.accounts.open_session, account.id, request.peer)
        return _redirect("/console/", guard.set_cookie(guard.SESSION_COOKIE, token),
                         guard.clear_cookie(guard.LOGIN_COOKIE))

    async def _who(self, request: Request) -> _Who | None:
        token = guard.cookies(dict(request.headers)).get(guard.SESSION_COOKIE)
        if not token or len(token) > 100:
            return None
        session = await self._call(self.accounts.session, token, max_idle_us=self._idle_us)
        if session is None:
            return None
        account = await self._call(self.accounts.get, session.account_id)
        return _Who(account, session, token)

    # -- ownership --------------------------------------------------------------------

    async def _owned(self, who: _Who, text: str) -> UUID:
        try:
            uuid = UUID(text)
        except ValueError:
            raise _NotFound from None
        if who.account.role != "operator" and not await self._call(
                self.accounts.owns, who.account.id, str(uuid)):
            raise _NotFound
        return uuid

    async def _owned_value(self, who: _Who, text: str) -> UUID:
        try:
            value = UUID(text)
        except ValueError:
            raise _NotFound from None
        where = await self.api.store.find_value(value)
        if where is None:
            raise _NotFound
        await self._owned(who, str(where.network))
        return value

    async def _fleet(self, who: _Who, flt: fleet.Filter) -> fleet.Page:
        """One overview page for `who`: the whole fleet for operators, their own networks
        for owners, filtered on the server (gateway.console.fleet)."""
        c, now = self.config, self.wall()
        certificates = self.api.certificates

        async def docs(statuses: list[Any]) -> list[dict[str, Any]]:
            expiry = await certificates.not_after(s.cert_serial for s in statuses)
            return [status_json(s, expiry) for s in statuses]

        if who.account.role == "operator":
            async def read(limit: int, after: UUID | None) -> list[dict[str, Any]]:
                return await docs(await self.api.store.list_networks(limit=limit, after=after))
            page = await fleet.operator_page(read, flt, now, page_size=c.console_page_size,
                                             scan_limit=c.console_scan_limit)
            figures.annotate(self.activity, page.networks)
            return page
        statuses, out = [], []
        for network in await self._call(self.accounts.networks_of, who.account.id):
            status = await self.api.store.connection_status(UUID(network))
            if status is None:
                out.append({"uuid": network, "status": "offline"})
            else:
                statuses.append(status)
        out.extend(await docs(statuses))
        out.sort(key=lambda d: d["uuid"])
        page = fleet.owner_page(out, flt, now, page_size=c.console_page_size)
        figures.annotate(self.activity, page.networks)
        return page

    async def _api_json(self, endpoint: Callable[..., Any], uuid: UUID, *, key: str,
                        missing: Any = _NotFound) -> Any:
        from ..http.errors import ApiError

        try:
            response = await endpoint(Request("GET", "/", {}), uuid)
        except ApiError:
            if missing is _NotFound:
                raise _NotFound from None
            return missing
        return json.loads(response.body)[key]

    async def _charts(self, doc: dict[str, Any], span: charts.TimeRange) -> dict[str, str]:
        out = {}
        for device in doc.get("devices", []):
            for value in device.get("values", []):
                drawn = await self._chart(UUID(value["uuid"]), span)
                if drawn:
                    out[value["uuid"]] = drawn
        return out

    async def _chart(self, value: UUID, span: charts.TimeRange, *,
                     standalone: bool = False) -> str:
        """The value's numeric reports in `span` as SVG ("" if none or not numbers): at most
        `console_chart_reports` read (the newest), downsampled to `console_chart_buckets`."""
        from ..storage.records import StateKind

        rows = await self.api.store.history(value, kind=StateKind.REPORT, since=span.since,
                                            until=span.until, newest_first=True,
                                            limit=self.config.console_chart_reports)
        points = []
        for r in reversed(rows):
            try:
                points.append((r.timestamp.timestamp(), float(r.data)))
            except ValueError:
                return ""  # not a number: no chart
        return charts.svg(charts.downsample(points, self.config.console_chart_buckets),
                          reports=len(points), standalone=standalone)

    # -- changes ------------------------------------------------------------------------

    async def _erase(self, network: UUID, who: _Who) -> None:
        if self.api.hooks is not None:
            await self.api.hooks.erase(network, who.operator)
        await self._call(self.accounts.forget_network, str(network))
        await revoke.on_erase(self, network, who)

    async def _delete_account(self, who: _Who, *, erase: bool) -> Response:
        """Delete the account now: its sessions end (its live streams are woken and stop),
        then, with `erase`, its networks are erased and barred; without, only released."""
        owned = await self._call(self.accounts.delete, who.account.id, release=not erase)
        self._kick(who.account.id)
        if erase:
            for network in owned:
                await self._erase(UUID(network), who)
        done = (f"your account and {len(owned)} network(s) were erased" if erase else
                f"your account was erased; {len(owned)} network(s) given up: their data "
                f"stays with the operators, their owner codes work again")
        return _html(200, pages.layout("Account deleted", pages.message(done)),
                     guard.clear_cookie(guard.SESSION_COOKIE))

    async def audit(self, label: str, request: Request, status: int, location: str = ""
                    ) -> None:
        """Log (and record in the audit trail) a console action; its target is the UUID in
        the path, or in the page it leads to (a claim names its network only there)."""
        if self.api.on_action is not None:
            await self.api.on_action(operator=label, action="console",
                                     method=request.method, path=request.path,
                                     target=_target(request.path) or _target(location),
                                     status=status, via="console")

    # -- data rights --------------------------------------------------------------------

    async def _export(self, who: _Who) -> Response:
        networks = (await self._call(self.accounts.networks_of, who.account.id)
                    if who.account.role == "owner" else [])
        head = {"account": {"email": who.account.email, "role": who.account.role,
                            "details": who.account.details,
                            "created": datetime.fromtimestamp(
                                who.account.created_us / 1e6, UTC).isoformat()},
                "exported": datetime.now(UTC).isoformat()}

        async def chunks() -> AsyncIterator[bytes]:
            yield json.dumps(head)[:-1].encode() + b',"networks":['
            for i, network in enumerate(networks):
                internal = Request("GET", "/", {}, operator=who.operator)
                from ..http.errors import ApiError
                try:
                    response = await self.api.export_network(internal, UUID(network))
                except ApiError:
                    continue
                yield (b"," if i else b"")
                if response.stream is not None:
                    async for part in response.stream:
                        yield part
                else:
                    yield response.body
            yield b"]}"

        return Response(200, (("content-type", JSON), (
            "content-disposition", 'attachment; filename="fleetgate-my-data.json"'),
            *guard.SECURITY_HEADERS), stream=chunks())

    async def _report(self, who: _Who) -> str:
        networks = (await self._call(self.accounts.networks_of, who.account.id)
                    if who.account.role == "owner" else [])
        sessions = await self._call(self.accounts.sessions_of, who.account.id)
        items = "".join(f"<li><code>{pages.e(n)}</code></li>" for n in networks)
        return f"""<table>
<tr><th>What</th><th>Why</th><th>Where, from whom</th><th>Who receives it</th><th>How long</th></tr>
<tr><td>Email address (encrypted), password hash (Argon2id)</td><td>to log you in</td>
<td>you, at sign-up</td><td>nobody</td><td>until you delete your account</td></tr>
<tr><td>Name, phone, address (encrypted; {len(who.account.details)} given)</td>
<td>only if you gave them</td><td>you</td><td>nobody</td><td>until you delete them</td></tr>
<tr><td>{len(sessions)} session(s): address and times</td><td>to keep you logged in and
show you where you are logged in</td><td>your browser</td><td>nobody</td>
<td>until logout, 8 idle hours, or deletion</td></tr>
<tr><td>{len(networks)} network(s): device tree, reported and control values, connection
history</td><td>to run and show your devices</td><td>your devices</td>
<td>the operators of this gateway</td><td>until you erase the network or your account</td></tr>
</table><ul>{items}</ul>"""

    # -- live updates -------------------------------------------------------------------

    async def _events(self, who: _Who, flt: fleet.Filter) -> Response:
        """Server-sent events: the status of the networks of the overview page `flt` shows,
        every `console_event_interval` seconds, while the session lasts. A session ending
        (logout, revocation, password change, account deletion) wakes the account's streams
        at once, and each whose session is gone ends."""
        c, account = self.config, who.account.id
        if (self._streams >= c.console_event_streams
                or self._streams_of.get(account, 0) >= c.console_event_streams_per_account):
            self.metrics.streams_refused.inc()
            return _html(503, pages.layout("Busy", pages.message("too many live views")))

        async def stream() -> AsyncIterator[bytes]:
            self._streams += 1
            self._streams_of[account] = self._streams_of.get(account, 0) + 1
            try:
                yield b"retry: 5000\n\n"
                while True:
                    wake = self._wake.setdefault(account, trio.Event())
                    if await self._call(self.accounts.session, who.token) is None:
                        return
                    page = await self._fleet(who, flt)
                    yield (b"event: status\ndata: " + json.dumps({"networks": [
                        {"uuid": n["uuid"], "status": n["status"], "last_seen": n.get(
                            "last_seen"), "activity": n.get("activity")} for n in page.networks
                    ], "activity": await figures.overall(self, who)}).encode() + b"\n\n")
                    with trio.move_on_after(c.console_event_interval):
                        await wake.wait()
            finally:
                self._streams -= 1
                left = self._streams_of.pop(account, 1) - 1
                if left:
                    self._streams_of[account] = left

        return Response(200, (("content-type", "text/event-stream"),
                              *guard.SECURITY_HEADERS), stream=stream())

    # -- responses ----------------------------------------------------------------------

    def _page(self, who: _Who, title: str, body: str, *, status: int = 200) -> Response:
        return _html(status, pages.layout(title, body, who=who.account.email,
                                          csrf=who.session.csrf,
                                          operator=who.account.role == "operator"))

    def _not_found(self, who: _Who) -> Response:
        return self._page(who, "Not found", pages.message("no such page or network"),
                          status=404)

    def _static(self, name: str) -> Response:
        if name not in STATIC:
            return _html(404, pages.layout("Not found", ""))
        body = files(__package__).joinpath("static", name).read_bytes()
        return Response(200, (("content-type", STATIC[name]), *guard.SECURITY_HEADERS[:-1],
                              ("cache-control", "max-age=300")), body)


@dataclass(frozen=True, slots=True)
class _SessionView:
    id: str
    address: str
    created: str
    seen: str

    def __init__(self, s: Session) -> None:
        object.__setattr__(self, "id", s.id)
        object.__setattr__(self, "address", s.address)
        object.__setattr__(self, "created", _iso(s.created_us))
        object.__setattr__(self, "seen", _iso(s.seen_us))


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _html(status: int, body: bytes, *extra: tuple[str, str]) -> Response:
    return Response(status, (("content-type", HTML), *guard.SECURITY_HEADERS, *extra), body)


def _redirect(to: str, *extra: tuple[str, str]) -> Response:
    return Response(303, (("location", to), *guard.SECURITY_HEADERS, *extra))


def _token() -> str:
    import secrets

    return secrets.token_urlsafe(32)


def _target(path: str) -> str | None:
    m = re.search(r"[0-9a-f]{8}-[0-9a-f-]{27}", path)
    return m.group(0) if m else None


def _number_or_text(text: str) -> Any:
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text else number
