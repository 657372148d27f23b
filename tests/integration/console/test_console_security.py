"""The console over real HTTPS: login, CSRF, owner isolation (404), headers, erasure."""

from __future__ import annotations

import http.client
import json
import re
import sqlite3

import trio
from consolehelpers import PW

from gateway.storage import DB_NAME


async def test_login_sets_a_strict_session_cookie_and_csp(cenv):
    await _operator(cenv)
    browser = cenv.browser()
    page = await browser.get("/console/")
    assert page.status == 303 and page.header("location") == "/console/login"
    login = await browser.login("op@example.org", PW)
    assert login.status == 303
    session = next(c for c in browser.set_cookies if c.startswith("__Host-fg_session="))
    for flag in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"):
        assert flag in session
    overview = await browser.get("/console/")
    assert overview.status == 200
    csp = overview.header("content-security-policy")
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in overview.text  # only <script src=...>


async def test_unknown_email_and_wrong_password_answer_alike(cenv):
    await _operator(cenv)
    a = await cenv.browser().login("nobody@example.org", PW)
    b = await cenv.browser().login("op@example.org", "wrong password!")
    assert a.status == b.status == 401
    strip = re.compile(r'value="[^"]+"')
    assert strip.sub("", a.text) == strip.sub("", b.text)


async def test_login_is_rate_limited_per_account(cenv):
    await _operator(cenv)
    for _ in range(5):
        assert (await cenv.browser().login("op@example.org", "wrong password!")).status == 401
    # The right password is refused now too: the account is locked for the window.
    assert (await cenv.browser().login("op@example.org", PW)).status == 429


async def test_a_form_without_its_csrf_token_is_refused(cenv, make_device):
    owner, _ = await cenv.own_network(make_device(), "ada@example.org")
    answer = await owner.post("/console/account/details", {"name": "Eve"}, csrf=False)
    assert answer.status == 403
    forged = await owner.post("/console/account/details", {"name": "Eve", "csrf": "x" * 43})
    assert forged.status == 403
    assert "Eve" not in (await owner.get("/console/account")).text
    login = await cenv.browser().request("POST", "/console/login", b"email=a&password=b")
    assert login.status == 403


async def test_an_owner_gets_404_for_another_owners_network_and_values(cenv, make_device):
    ada_bundle, bob_bundle = make_device(), make_device()
    ada, _ = await cenv.own_network(ada_bundle, "ada@example.org")
    bob, _ = await cenv.own_network(bob_bundle, "bob@example.org")
    mine = await ada.get(f"/console/networks/{ada_bundle.network_uuid}")
    assert mine.status == 200 and str(ada_bundle.network_uuid) in mine.text
    theirs = await ada.get(f"/console/networks/{bob_bundle.network_uuid}")
    unknown = await ada.get("/console/networks/00000000-0000-4000-8000-000000000000")
    assert theirs.status == unknown.status == 404
    assert str(bob_bundle.network_uuid) not in theirs.text
    assert theirs.text == unknown.text
    overview = await ada.get("/console/")
    assert str(ada_bundle.network_uuid) in overview.text
    assert str(bob_bundle.network_uuid) not in overview.text
    bob_value = re.search(r'/console/values/([0-9a-f-]{36})/control',
                          (await bob.get(f"/console/networks/{bob_bundle.network_uuid}")).text)
    assert bob_value
    sent = await ada.post(f"/console/values/{bob_value.group(1)}/control", {"data": "1"})
    assert sent.status == 404
    erase = await ada.post(f"/console/networks/{bob_bundle.network_uuid}/erase",
                           {"confirm": str(bob_bundle.network_uuid)})
    assert erase.status == 404
    assert (await bob.get(f"/console/networks/{bob_bundle.network_uuid}")).status == 200
    export = json.loads((await ada.get("/console/account/export")).body)
    assert len(export["networks"]) == 1 and export["account"]["email"] == "ada@example.org"
    assert str(ada_bundle.network_uuid) in json.dumps(export)
    assert str(bob_bundle.network_uuid) not in json.dumps(export)


async def test_an_owner_code_works_once(cenv, make_device):
    bundle = make_device()
    _, code = await cenv.own_network(bundle, "ada@example.org")
    await _account(cenv, "bob@example.org")
    bob = cenv.browser()
    await bob.login("bob@example.org", PW)
    again = await bob.post("/console/claim", {"code": code})
    assert again.status == 422
    assert (await bob.get(f"/console/networks/{bundle.network_uuid}")).status == 404


async def test_script_in_a_detail_is_rendered_inert(cenv, make_device):
    owner, _ = await cenv.own_network(make_device(), "ada@example.org")
    await owner.post("/console/account/details", {"name": "<script>alert(1)</script>"})
    page = (await owner.get("/console/account")).text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


async def test_a_password_change_ends_other_sessions(cenv):
    await _account(cenv, "ada@example.org")
    first, second = cenv.browser(), cenv.browser()
    await first.login("ada@example.org", PW)
    await second.login("ada@example.org", PW)
    changed = await first.post("/console/account/password", {"old": PW, "new": PW + "!"})
    assert changed.status == 200 and "1 other session" in changed.text
    assert (await second.get("/console/account")).status == 303
    assert (await first.get("/console/account")).status == 200


async def test_deleting_an_account_leaves_no_row_of_it_or_its_networks(cenv, make_device):
    bundle, other = make_device(), make_device()
    owner, _ = await cenv.own_network(bundle, "ada@example.org")
    await cenv.own_network(other, "bob@example.org")
    deleted = await owner.post("/console/account/delete", {"confirm": "DELETE"})
    assert deleted.status == 200
    net = str(bundle.network_uuid)
    db = sqlite3.connect(cenv.data / DB_NAME)
    tables = [r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        if r[0] != "audit"]  # the audit trail keeps the record of the erasure, by design
    left = {t: sum(1 for row in db.execute(f"SELECT * FROM {t}") if net in repr(row))
            for t in tables}
    assert not any(left.values()), left
    assert [a for (a,) in db.execute("SELECT action FROM audit WHERE subject = ?", (net,))] \
        == ["console.claim", "erase"]
    assert db.execute("SELECT COUNT(*) FROM networks WHERE uuid = ?",
                      (str(other.network_uuid),)).fetchone()[0] == 1
    db.close()
    accounts = sqlite3.connect(cenv.data / "accounts.db")
    rows = [row for (t,) in accounts.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")
        for row in accounts.execute(f"SELECT * FROM {t}")]
    assert not any(net in repr(row) for row in rows)
    assert accounts.execute("SELECT COUNT(*) FROM accounts").fetchone()[0] == 1  # bob
    accounts.close()
    assert (await owner.get("/console/")).status == 303  # logged out
    assert '"operator_action"' in cenv.log.getvalue() and '"via":"console"' in \
        cenv.log.getvalue().replace(" ", "")


async def _account(cenv, email: str, role: str = "owner") -> None:
    import trio
    await trio.to_thread.run_sync(cenv.accounts.add, email, PW, role)


async def _operator(cenv) -> None:
    await _account(cenv, "op@example.org", "operator")


async def test_live_updates_stream_only_own_networks_and_end_at_logout(cenv, make_device):
    import http.client

    import trio

    ada_bundle, bob_bundle = make_device(), make_device()
    ada, _ = await cenv.own_network(ada_bundle, "ada@example.org")
    await cenv.own_network(bob_bundle, "bob@example.org")

    conn = http.client.HTTPSConnection(ada.host, ada.port, context=ada.context, timeout=30)
    cookie = "; ".join(f"{k}={v}" for k, v in ada.cookies.items())

    def first_event():
        conn.request("GET", "/console/events", headers={"cookie": cookie})
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("content-type") == "text/event-stream"
        while not (line := resp.readline()).startswith(b"data: "):
            pass
        return resp, json.loads(line[6:])

    resp, event = await trio.to_thread.run_sync(first_event)
    assert [n["uuid"] for n in event["networks"]] == [str(ada_bundle.network_uuid)]
    await ada.post("/console/logout", {})
    rest = await trio.to_thread.run_sync(resp.read)  # returns: the stream ended
    assert rest.count(b"event: status") <= 1
    conn.close()


async def test_operators_list_accounts_without_emails_and_owners_cannot(cenv, make_device):
    owner, _ = await cenv.own_network(make_device(), "ada@example.org")
    await _operator(cenv)
    op = cenv.browser()
    await op.login("op@example.org", PW)
    listing = await op.get("/console/accounts")
    assert listing.status == 200 and "owner" in listing.text
    assert "ada@example.org" not in listing.text
    assert (await owner.get("/console/accounts")).status == 404


async def test_a_signed_in_connection_leaves_the_unauthenticated_pool(cenv):
    # Unauthenticated connections may be evicted by newer ones and get 5 s per request head;
    # a console user's keep-alive connection (and its live-update stream) must not be.
    await trio.to_thread.run_sync(cenv.accounts.add, "op@example.org", PW, "operator")
    browser = cenv.browser()
    assert (await browser.login("op@example.org", PW)).status == 303
    cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())

    def keep_alive() -> tuple[int, int, int]:
        conn = http.client.HTTPSConnection(*cenv.http, context=browser.context, timeout=30)
        try:
            conn.request("GET", "/console/login")  # no session yet: still pending
            conn.getresponse().read()
            before = cenv.stats.operator_connections
            conn.request("GET", "/console/", headers={"cookie": cookie})
            response = conn.getresponse()
            response.read()
            return response.status, before, cenv.stats.operator_connections
        finally:
            conn.close()

    status, before, after = await trio.to_thread.run_sync(keep_alive)
    assert (status, before, after) == (200, 0, 1)

