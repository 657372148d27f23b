"""The console over real HTTPS: chart ranges and downsampling, overview filters and pages,
owner sign-up, claim limits, account deletion (erase or release) and its live streams, and
the [console] limits taken from the configuration."""

from __future__ import annotations

import http.client
import json
import re
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
import trio
from consolehelpers import PW, Browser, start_console_env
from httphelpers import T0, Device, client_context, seed_network, value_uuid

from gateway.storage import DB_NAME, open_sqlite_store


@pytest.fixture
def options() -> dict:
    return {}


@pytest.fixture
async def env(ca_home, tmp_path: Path, options):
    data = tmp_path / "data"
    async with open_sqlite_store(data) as store:
        async with trio.open_nursery() as nursery:
            yield await start_console_env(ca_home, data, nursery, store, **options)
            nursery.cancel_scope.cancel()


async def _login(env, email: str, role: str) -> object:
    await trio.to_thread.run_sync(env.accounts.add, email, PW, role)
    browser = env.browser()
    assert (await browser.login(email, PW)).status == 303
    return browser


def _attr(svg: str, name: str) -> str:
    m = re.search(rf'{name}="([^"]*)"', svg)
    assert m, svg[:300]
    return m.group(1)


# -- charts -----------------------------------------------------------------------------

@pytest.mark.parametrize("options", [{"console_chart_buckets": 50}])
async def test_a_chart_of_thousands_of_reports_is_bounded_and_its_range_applies(
        env, make_device):
    bundle = make_device()
    owner, _ = await env.own_network(bundle, "ada@example.org")
    tree = await seed_network(env.ingest, bundle.network_uuid, reports=5000)
    temp = value_uuid(tree, "temp")

    whole = await owner.get(f"/console/values/{temp}/chart")
    assert whole.status == 200 and whole.header("content-type") == "image/svg+xml"
    assert "<script" not in whole.text
    assert _attr(whole.text, "data-reports") == "5000"
    points = int(_attr(whole.text, "data-points"))
    assert 50 < points <= 100  # min and max of each of 50 buckets
    assert len(_attr(whole.text, " points").split()) == points  # the polyline's points
    assert "0 to 99" in _attr(whole.text, "aria-label")  # min/max survive the reduction

    # Minutes 10 to 20 of the seeded series (values i % 100): only those are drawn.
    since, until = (T0 + timedelta(minutes=10)).timestamp(), (
        T0 + timedelta(minutes=20)).timestamp()
    zoomed = await owner.get(f"/console/values/{temp}/chart?from={since}&to={until}")
    reports = int(_attr(zoomed.text, "data-reports"))
    assert 10 <= reports <= 11
    assert re.search(r"reports, 1[01] to (19|20)\"", zoomed.text), _attr(zoomed.text,
                                                                       "aria-label")
    # The network page takes the same range (ISO times from the form) for its charts.
    page = await owner.get(f"/console/networks/{bundle.network_uuid}"
                           f"?from={(T0 + timedelta(minutes=10)).isoformat()[:19]}"
                           f"&to={(T0 + timedelta(minutes=20)).isoformat()[:19]}")
    assert page.status == 200
    assert re.search(r'data-reports="1[01]"', page.text)
    assert 'name="from"' in page.text and 'href="/console/networks/' in page.text
    # A range with nothing in it draws nothing; a bad one is refused with a clear answer.
    empty = await owner.get(f"/console/values/{temp}/chart?range=1h")  # data is from 2026-11
    assert empty.status == 200 and _attr(empty.text, "data-points") == "0"
    assert (await owner.get(f"/console/values/{temp}/chart?from=2&to=1")).status == 400
    assert (await owner.get(f"/console/values/{temp}/chart?range=year")).status == 400
    assert (await owner.get(f"/console/networks/{bundle.network_uuid}?from=x")).status == 400


async def test_another_owners_chart_is_not_found(env, make_device):
    ada_bundle, bob_bundle = make_device(), make_device()
    await env.own_network(ada_bundle, "ada@example.org")
    bob, _ = await env.own_network(bob_bundle, "bob@example.org")
    tree = (await env.store.get_tree(ada_bundle.network_uuid)).to_json()
    temp = value_uuid(tree, "temp")
    assert (await bob.get(f"/console/values/{temp}/chart")).status == 404


# -- overview -----------------------------------------------------------------------------

@pytest.mark.parametrize("options", [{"console_page_size": 2}])
async def test_overview_filters_search_and_pages_on_the_server(env, make_device):
    soon, later, never = make_device(days=10), make_device(), make_device()
    online = Device(*env.mqtt, soon)
    assert (await online.connect())[1] == 0  # stays connected: online
    await env.connect(later)  # connected once, then offline
    for bundle in (soon, later, never):
        await seed_network(env.ingest, bundle.network_uuid, reports=1)  # after the status
    op = await _login(env, "op@example.org", "operator")
    uuids = {str(b.network_uuid) for b in (soon, later, never)}

    def listed(page) -> set[str]:
        return set(re.findall(r'<tr data-network="([^"]+)"', page.text))

    # Pages of 2: every network exactly once, following the "next page" links.
    seen: list[str] = []
    page = await op.get("/console/")
    while True:
        seen += sorted(listed(page))
        more = re.search(r'id="more" href="([^"]+)"', page.text)
        if not more:
            break
        page = await op.get(more.group(1).replace("&amp;", "&"))
    assert sorted(seen) == sorted(uuids) and len(seen) == 3

    assert listed(await op.get("/console/?status=online")) == {str(soon.network_uuid)}
    offline = await op.get("/console/?status=offline")
    assert listed(offline) == {str(later.network_uuid), str(never.network_uuid)}
    assert 'option value="offline" selected' in offline.text
    assert listed(await op.get("/console/?expiring=1")) == {str(soon.network_uuid)}
    part = str(later.network_uuid)[9:18].upper()  # case does not matter
    assert listed(await op.get(f"/console/?q={part}")) == {str(later.network_uuid)}
    assert listed(await op.get("/console/?q=%3Cscript%3E")) == set()
    assert "&lt;script&gt;" in (await op.get("/console/?q=%3Cscript%3E")).text
    await online.close()


async def test_an_owners_filters_see_only_their_networks(env, make_device):
    ada_bundle, bob_bundle = make_device(), make_device()
    ada, _ = await env.own_network(ada_bundle, "ada@example.org")
    await env.own_network(bob_bundle, "bob@example.org")
    bob_part = str(bob_bundle.network_uuid)[:8]
    page = await ada.get(f"/console/?q={bob_part}")
    assert page.status == 200 and str(bob_bundle.network_uuid) not in page.text
    assert str(ada_bundle.network_uuid) in (await ada.get("/console/?status=offline")).text


# -- sign-up and claims ---------------------------------------------------------------------

async def _signup(browser, **fields: str):
    token = (await browser.get("/console/signup")).csrf()
    return await browser.post("/console/signup", {"csrf": token, **fields})


@pytest.mark.parametrize("options", [{"console_signups_per_address": 3}])
async def test_an_owner_signs_up_then_claims_a_network(env, make_device):
    bundle = make_device()
    await env.connect(bundle)
    login = await env.browser().get("/console/login")
    assert 'href="/console/signup"' in login.text
    browser = env.browser()
    made = await _signup(browser, email="ada@example.org", password=PW, again=PW,
                         name="Ada <b>L</b>", phone="")
    assert made.status == 303 and made.header("location") == "/console/"
    account = await browser.get("/console/account")
    assert account.status == 200 and "ada@example.org" in account.text
    assert "Ada &lt;b&gt;L&lt;/b&gt;" in account.text  # details kept, inert
    code = json.loads((bundle.dir / "device.json").read_text())["owner_code"]
    claimed = await browser.post("/console/claim", {"code": code})
    assert claimed.status == 303
    assert str(bundle.network_uuid) in (await browser.get("/console/")).text
    assert '"via":"console"' in env.log.getvalue().replace(" ", "")

    # The same address again: refused with a clear page; then the address is limited.
    again = await _signup(env.browser(), email="ada@example.org", password=PW, again=PW)
    assert again.status == 422 and "exists" in again.text
    differ = await _signup(env.browser(), email="bob@example.org", password=PW, again=PW + "x")
    assert differ.status == 422 and "differ" in differ.text
    limited = await _signup(env.browser(), email="eve@example.org", password=PW, again=PW)
    assert limited.status == 429
    assert env.gateway.metrics.console.signups_locked.value == 1
    no_form = await env.browser().request("POST", "/console/signup", b"email=a&password=b",
                                          {"content-type": "application/x-www-form-urlencoded"})
    assert no_form.status == 403


@pytest.mark.parametrize("options", [{"console_signup": False}])
async def test_sign_up_can_be_turned_off(env):
    assert (await env.browser().get("/console/signup")).status == 303  # to the login page
    assert 'href="/console/signup"' not in (await env.browser().get("/console/login")).text


@pytest.mark.parametrize("options", [{"console_login_failures": 2}])
async def test_wrong_owner_codes_are_limited_per_account(env, make_device):
    bundle = make_device()
    await env.connect(bundle)
    owner = await _login(env, "ada@example.org", "owner")
    for _ in range(2):
        assert (await owner.post("/console/claim", {"code": "0" * 39})).status == 422
    code = json.loads((bundle.dir / "device.json").read_text())["owner_code"]
    assert (await owner.post("/console/claim", {"code": code})).status == 429
    assert str(bundle.network_uuid) not in (await owner.get("/console/")).text
    assert env.gateway.metrics.console.claims_locked.value == 1


# -- deleting an account --------------------------------------------------------------------

def _open_stream(browser):
    conn = http.client.HTTPSConnection(browser.host, browser.port, context=browser.context,
                                       timeout=30)
    cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    conn.request("GET", "/console/events", headers={"cookie": cookie})
    resp = conn.getresponse()
    assert resp.status == 200
    while not resp.readline().startswith(b"data: "):
        pass
    return conn, resp


@pytest.mark.parametrize("options", [{"console_event_interval": 3600.0}])
async def test_deleting_an_account_ends_its_live_streams_at_once(env, make_device):
    bundle = make_device()
    owner, _ = await env.own_network(bundle, "ada@example.org")
    conn, resp = await trio.to_thread.run_sync(_open_stream, owner)
    # The next update is an hour away: the stream can only end because the session did.
    deleted = await owner.post("/console/account/delete",
                               {"confirm": "DELETE", "networks": "erase"})
    assert deleted.status == 200 and "1 network(s) were erased" in deleted.text
    rest = await trio.to_thread.run_sync(resp.read)
    assert b"event: status" not in rest
    conn.close()
    assert await env.store.get_tree(bundle.network_uuid) is None
    assert (await owner.get("/console/account")).status == 303


async def test_deleting_an_account_can_release_its_networks_instead(env, make_device):
    bundle = make_device()
    owner, code = await env.own_network(bundle, "ada@example.org")
    page = (await owner.get("/console/account")).text
    assert 'value="release"' in page and 'value="erase" checked' in page
    deleted = await owner.post("/console/account/delete",
                               {"confirm": "DELETE", "networks": "release"})
    assert deleted.status == 200 and "given up" in deleted.text
    assert await env.store.get_tree(bundle.network_uuid) is not None  # data kept
    accounts = sqlite3.connect(env.data / "accounts.db")
    assert accounts.execute("SELECT COUNT(*) FROM accounts").fetchone()[0] == 0
    assert accounts.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0
    assert accounts.execute("SELECT owner_id, claimed_us FROM owner_codes").fetchall() == [
        (None, None)]
    accounts.close()
    # The code on the device's label works again, for the next owner.
    bob = await _login(env, "bob@example.org", "owner")
    assert (await bob.post("/console/claim", {"code": code})).status == 303
    db = sqlite3.connect(env.data / DB_NAME)
    assert db.execute("SELECT COUNT(*) FROM networks WHERE uuid = ?",
                      (str(bundle.network_uuid),)).fetchone()[0] == 1
    db.close()


async def test_an_erasure_through_the_json_api_forgets_the_networks_owner_code(
        env, make_device, ca_home):
    bundle = make_device()
    await env.own_network(bundle, "ada@example.org")
    accounts = sqlite3.connect(env.data / "accounts.db")
    try:
        assert accounts.execute("SELECT network FROM owner_codes").fetchall() == [
            (str(bundle.network_uuid),)]
        op = ca_home.path / "operator"
        operator = Browser(*env.http, client_context(ca_home.path / "root.crt",
                                                     op / "operator.crt", op / "operator.key"))
        erased = await operator.request("DELETE", f"/api/v1/networks/{bundle.network_uuid}")
        assert erased.status == 200, erased.text
        # Its code hash and its owner went with the network's data, at once.
        assert accounts.execute("SELECT COUNT(*) FROM owner_codes").fetchone()[0] == 0
    finally:
        accounts.close()


# -- limits from the configuration ------------------------------------------------------------

@pytest.mark.parametrize("options", [{"console_event_streams_per_account": 1}])
async def test_live_streams_per_account_are_limited(env, make_device):
    owner, _ = await env.own_network(make_device(), "ada@example.org")
    conn, resp = await trio.to_thread.run_sync(_open_stream, owner)
    second = await owner.get("/console/events")
    assert second.status == 503
    assert env.gateway.metrics.console.streams_refused.value == 1
    other = await _login(env, "op@example.org", "operator")
    conn2, resp2 = await trio.to_thread.run_sync(_open_stream, other)  # another account: fine
    await owner.post("/console/logout", {})
    await trio.to_thread.run_sync(resp.read)
    conn.close()
    await other.post("/console/logout", {})
    await trio.to_thread.run_sync(resp2.read)
    conn2.close()


async def test_a_claim_link_keeps_only_a_well_formed_code_and_changes_nothing(env, make_device):
    bundle = make_device()
    await env.connect(bundle)
    code = json.loads((bundle.dir / "device.json").read_text())["owner_code"]
    browser = env.browser()
    page = await browser.get(f"/console/claim?code={code}")
    assert page.status == 200 and code not in page.text
    [cookie] = [c for c in browser.set_cookies if c.startswith("__Host-fg_claim=")]
    assert all(flag in cookie for flag in ("Secure", "HttpOnly", "SameSite=Strict",
                                           "Max-Age=900"))
    for bad in ("%3Cscript%3E", "x" * 65, ""):
        other = env.browser()
        answer = await other.get(f"/console/claim?code={bad}")
        assert answer.status == 200 and "<script>" not in answer.text
        assert not other.set_cookies
    # A logged-in owner's overview fills the form in; the claim clears the kept code.
    await trio.to_thread.run_sync(env.accounts.add, "ada@example.org", PW, "owner")
    assert (await browser.login("ada@example.org", PW)).status == 303
    assert f'value="{code}"' in (await browser.get("/console/")).text
    claimed = await browser.post("/console/claim", {"code": code})
    assert claimed.status == 303
    assert "__Host-fg_claim" not in browser.cookies


async def test_activity_figures_count_reports_over_mqtt_and_stay_with_their_owner(
        env, make_device):
    ada_bundle, bob_bundle = make_device(), make_device()
    await env.own_network(ada_bundle, "ada@example.org")
    bob, _ = await env.own_network(bob_bundle, "bob@example.org")
    operator = await _login(env, "op@example.org", "operator")
    ada = env.browser()
    assert (await ada.login("ada@example.org", PW)).status == 303
    env.stop_the_minute()
    device = Device(*env.mqtt, ada_bundle, client_id="fig")
    (_, rc) = await device.connect()
    assert rc == 0
    batch = json.dumps({"reports": [{"data": i} for i in range(12)]})
    await trio.to_thread.run_sync(  # PUBACK: ingest has accepted (and counted) them
        lambda: device.client.publish("report/thermo/temp", batch, qos=1).wait_for_publish(20))
    await device.close()

    def figure(page: str, name: str) -> float:
        m = re.search(rf'<span id="{name}">([0-9.]+)</span>', page)
        assert m, page[:2000]
        return float(m.group(1))

    op_page = (await operator.get("/console/")).text
    assert figure(op_page, "reports-per-minute") >= 12
    assert figure(op_page, "refused-per-minute") == 0
    assert '<svg class="hour"' in op_page and "<rect" in op_page  # the last hour, per minute
    ada_page = (await ada.get("/console/")).text
    assert figure(ada_page, "reports-per-minute") >= 12
    assert 'id="refused-per-minute"' not in ada_page  # the fleet's refusals: operators only
    row = ada_page.split(f'data-network="{ada_bundle.network_uuid}"', 1)[1]
    assert float(re.search(r'class="reports-per-minute">([0-9.]+)<', row).group(1)) >= 12
    # Another owner's figures do not include Ada's reports.
    assert figure((await bob.get("/console/")).text, "reports-per-minute") == 0
