"""The console's security plumbing: cookies, CSRF, login rate limits, response headers.

- The session cookie is `__Host-fg_session`: HttpOnly, Secure, SameSite=Strict, Path=/ (the
  `__Host-` prefix makes the browser refuse it from any other origin or path).
- Every state change is a POST whose form carries the session's CSRF token (compared in
  constant time); the login form, before any session, carries a token that must equal the
  `__Host-fg_login` cookie set with it (double submit).
- Login attempts are limited per account (the email's lookup hash) and per client address:
  `console_login_failures` failures within `console_login_window` seconds lock that key
  until the window passes. The map is bounded (`console_login_tracked`); the oldest entries
  are forgotten first. The same limiter counts sign-ups per address and refused owner codes
  per account.
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl

SESSION_COOKIE = "__Host-fg_session"
LOGIN_COOKIE = "__Host-fg_login"
LOGIN_FAILURES = 5  # defaults; `fleet-gateway serve` passes its [console] options
LOGIN_WINDOW = 900.0  # seconds
MAX_TRACKED = 10_000

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cache-control", "no-store"),
)


def cookies(headers: dict[str, str] | object) -> dict[str, str]:
    raw = headers.get("cookie", "") if isinstance(headers, dict) else ""
    jar = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


def set_cookie(name: str, value: str, *, max_age: int | None = None) -> tuple[str, str]:
    age = f"; Max-Age={max_age}" if max_age is not None else ""
    return ("set-cookie",
            f"{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict{age}")


def clear_cookie(name: str) -> tuple[str, str]:
    return set_cookie(name, "", max_age=0)


def form(body: bytes) -> dict[str, str]:
    """An x-www-form-urlencoded body; the last of repeated names wins. {} when undecodable."""
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        return {}


def same_token(expected: str, given: str | None) -> bool:
    return bool(expected) and given is not None and hmac.compare_digest(
        expected.encode(), given.encode())


class LoginLimiter:
    """Failures per key within a sliding window; `clock` is monotonic seconds."""

    def __init__(self, clock: Callable[[], float], *, failures: int = LOGIN_FAILURES,
                 window: float = LOGIN_WINDOW, tracked: int | None = None) -> None:
        self._clock = clock
        self._tracked = tracked if tracked is not None else MAX_TRACKED
        self._failures = failures
        self._window = window
        self._seen: OrderedDict[bytes | str, list[float]] = OrderedDict()

    def locked(self, *keys: bytes | str) -> bool:
        now = self._clock()
        for key in keys:
            times = [t for t in self._seen.get(key, ()) if now - t < self._window]
            if len(times) >= self._failures:
                return True
        return False

    def failed(self, *keys: bytes | str) -> None:
        now = self._clock()
        for key in keys:
            times = [t for t in self._seen.pop(key, []) if now - t < self._window]
            times.append(now)
            self._seen[key] = times[-self._failures:]
            while len(self._seen) > self._tracked:
                self._seen.popitem(last=False)

    def succeeded(self, *keys: bytes | str) -> None:
        for key in keys:
            self._seen.pop(key, None)
