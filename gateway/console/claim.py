"""Claim links: the QR code on a device's label opens `/console/claim?code=<owner code>`.

A phone's camera opens that link as a navigation from another site, so the browser does not
send the SameSite=Strict session cookie with it: the console cannot tell yet whether the
person is logged in. The link's page therefore changes nothing and needs no session: it
keeps the code in a short-lived cookie of its own (`__Host-fg_claim`: HttpOnly, Secure,
SameSite=Strict, 15 minutes) and goes on to the overview (a same-site navigation, so the
session cookie is sent again). There, after logging in or signing up if need be, an owner
finds the *Add a network* form filled in with the code; claiming stays a POST with its
CSRF token, as when the code is typed, and the cookie is cleared once the claim succeeds.
Nothing is written on the server for a link, and the code is never in a URL the console
redirects to or logs.
"""

from __future__ import annotations

import re

from ..http.messages import Request, Response
from . import guard, pages

COOKIE = "__Host-fg_claim"
MAX_AGE = 900  # seconds the code waits for a login or a sign-up
_CODE = re.compile(r"^[0-9a-fA-F-]{1,64}$")


def landing(request: Request) -> Response:
    """The claim link's page: keep a well-formed code, then go on to the overview."""
    code = request.query.get("code", "").strip()
    headers = [("content-type", "text/html; charset=utf-8"), *guard.SECURITY_HEADERS]
    if _CODE.match(code):
        headers.append(guard.set_cookie(COOKIE, code.lower(), max_age=MAX_AGE))
        text = ("Your device's owner code is ready: continue to the console (log in or sign "
                "up first if you need to) and confirm adding the network.")
    else:
        text = "This link holds no owner code: type the code from the label instead."
    body = pages.layout("Add a network", (
        '<meta http-equiv="refresh" content="1; url=/console/">'
        f'<p class="notice" role="status">{pages.e(text)}</p>'
        '<p><a href="/console/" id="continue">Continue</a></p>'))
    return Response(200, tuple(headers), body)


def pending(request: Request) -> str:
    """The code a claim link left for this browser ("" if none)."""
    code = guard.cookies(dict(request.headers)).get(COOKIE, "")
    return code if _CODE.match(code) else ""


def done() -> tuple[str, str]:
    """The header that forgets the code once it was claimed."""
    return guard.clear_cookie(COOKIE)
