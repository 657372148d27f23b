"""The console's guard: login limits per key within a window, cookies, forms, tokens."""

from __future__ import annotations

from gateway.console import guard, pages


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_login_limiter_locks_after_failures_and_unlocks_after_the_window():
    clock = Clock()
    limiter = guard.LoginLimiter(clock, failures=3, window=60)
    for _ in range(2):
        limiter.failed(b"ada", "10.0.0.1")
    assert not limiter.locked(b"ada", "10.0.0.1")
    limiter.failed(b"ada", "10.0.0.1")
    assert limiter.locked(b"ada") and limiter.locked("10.0.0.1")
    assert not limiter.locked(b"bob", "10.0.0.2")
    clock.now += 61
    assert not limiter.locked(b"ada", "10.0.0.1")


def test_a_success_clears_the_failures():
    limiter = guard.LoginLimiter(Clock(), failures=2, window=60)
    limiter.failed(b"ada")
    limiter.succeeded(b"ada")
    limiter.failed(b"ada")
    assert not limiter.locked(b"ada")


def test_tracked_keys_are_bounded(monkeypatch):
    monkeypatch.setattr(guard, "MAX_TRACKED", 10)
    limiter = guard.LoginLimiter(Clock())
    for i in range(50):
        limiter.failed(f"10.0.0.{i}")
    assert len(limiter._seen) == 10


def test_cookie_flags_and_parsing():
    name, value = guard.set_cookie(guard.SESSION_COOKIE, "tok")
    assert name == "set-cookie"
    assert value == "__Host-fg_session=tok; Path=/; Secure; HttpOnly; SameSite=Strict"
    assert guard.cookies({"cookie": "__Host-fg_session=tok; other=1"})[guard.SESSION_COOKIE] \
        == "tok"
    assert guard.cookies({"cookie": '"\\'}) == {}  # a forged header parses to nothing


def test_forms_and_tokens():
    assert guard.form(b"a=1&b=%3Cx%3E") == {"a": "1", "b": "<x>"}
    assert guard.form(b"\xff\xfe") == {}
    assert guard.same_token("abc", "abc")
    assert not guard.same_token("abc", None) and not guard.same_token("", "")


def test_pages_escape_every_field():
    html = pages.overview([{"uuid": "<b>", "status": "online\"><script>",
                            "last_seen": "<i>"}], "c", "owner").replace("\n", "")
    assert "<script>" not in html and "<b>" not in html and "&lt;i&gt;" in html
