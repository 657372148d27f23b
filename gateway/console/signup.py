"""Owners' self-service sign-up: an email address, a password (twice), optional details.

Open only while `console_signup` is on. Every attempt, accepted or not, counts against the
client address (`console_signups_per_address` per `console_login_window`); past it 429. The
form is protected like the login form (a token equal to the `__Host-fg_login` cookie). A new
account is an owner with no network: it is logged in at once and adds its networks with
their owner codes. An address that has an account already is told so (there is no mail to
verify it with): the per-address limit bounds how fast addresses can be probed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..accounts import AccountError
from ..accounts.errors import AccountExists
from ..accounts.store import DETAIL_FIELDS
from ..http.messages import Request, Response
from . import guard, pages

if TYPE_CHECKING:
    from .app import Console


def page(console: Console, message: str = "", status: int = 200,
         given: dict[str, str] | None = None) -> Response:
    from .app import _html, _token

    token = _token()
    return _html(status, pages.signup(token, message, given),
                 guard.set_cookie(guard.LOGIN_COOKIE, token))


async def signup(console: Console, request: Request) -> Response:
    from .app import _redirect

    fields = guard.form(request.body)
    cookie = guard.cookies(dict(request.headers)).get(guard.LOGIN_COOKIE, "")
    if not guard.same_token(cookie, fields.get("csrf")):
        return page(console, "this form is stale: try again", 403)
    if console.signups.locked(request.peer):
        console.metrics.signups_locked.inc()
        return page(console, "too many sign-ups from your address: wait 15 minutes", 429)
    console.signups.failed(request.peer)  # every attempt counts, accepted or not
    email = fields.get("email", "")[:254]
    given = {"email": email, **{k: fields.get(k, "")[:500] for k in DETAIL_FIELDS}}
    if fields.get("password", "") != fields.get("again", ""):
        return page(console, "the two passwords differ", 422, given)
    details = {k: v for k, v in given.items() if k in DETAIL_FIELDS and v.strip()}
    try:
        account = await console.call(console.accounts.add, email, fields.get("password", ""),
                                     "owner", details)
    except AccountExists:
        return page(console, "an account with this email address exists: log in", 422, given)
    except AccountError as exc:
        return page(console, str(exc), 422, given)
    console.metrics.signups.inc()
    await console.audit(f"owner:{account.id}", request, 303)
    token, _ = await console.call(console.accounts.open_session, account.id, request.peer)
    return _redirect("/console/", guard.set_cookie(guard.SESSION_COOKIE, token),
                     guard.clear_cookie(guard.LOGIN_COOKIE))
