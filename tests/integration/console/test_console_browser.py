"""The console in a real browser: Debian's headless Chromium driven by Selenium.

The browser trusts the gateway's certificate by `acceptInsecureCerts` (our own test CA is
not in its trust store; TLS itself is tested elsewhere). Set FLEETGATE_SCREENSHOTS=<dir> to
keep the screenshots docs/console.md shows.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio
from consolehelpers import PW

from gateway.storage import DB_NAME

pytestmark = pytest.mark.slow

CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1100,800")


@pytest.fixture
def chrome(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary and driver, "make test installs chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chrome-profile'}")
    options.accept_insecure_certs = True
    browser = webdriver.Chrome(service=Service(driver), options=options)
    browser.set_page_load_timeout(60)
    yield browser
    browser.quit()


def _gone(element) -> bool:
    """Whether `element`'s page has been replaced. Chromium reports a node of a replaced
    document either as stale or as "does not belong to the document": both mean gone."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc):
            return True
        raise
    return False


class Page:
    """The synchronous Selenium calls, each run in a worker thread (the gateway is trio)."""

    def __init__(self, driver, base: str, shots: Path | None) -> None:
        self.d, self.base, self.shots = driver, base, shots

    async def run(self, fn, *args):
        return await trio.to_thread.run_sync(fn, *args)

    async def open(self, path: str) -> None:
        await self.run(self.d.get, self.base + path)

    async def fill_submit(self, form_css: str, **fields: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        def go():
            form = self.d.find_element(By.CSS_SELECTOR, form_css)
            for name, value in fields.items():
                box = form.find_element(By.NAME, name)
                box.clear()
                box.send_keys(value)
            form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            # The next page has loaded when the form's page is gone (an event, not a sleep).
            WebDriverWait(self.d, 30).until(lambda _: _gone(form))
        await self.run(go)

    async def text(self) -> str:
        from selenium.webdriver.common.by import By
        return await self.run(lambda: self.d.find_element(By.TAG_NAME, "body").text)

    async def title(self) -> str:
        return await self.run(lambda: self.d.title)

    async def shot(self, name: str) -> None:
        if self.shots is not None:
            await self.run(self.d.save_screenshot, str(self.shots / f"{name}.png"))

    async def login(self, email: str) -> None:
        await self.open("/console/login")
        await self.fill_submit("#login", email=email, password=PW)


async def test_operator_and_owner_in_a_real_browser(cenv, make_device, chrome):
    shots = os.environ.get("FLEETGATE_SCREENSHOTS")
    page = Page(chrome, f"https://127.0.0.1:{cenv.http[1]}", Path(shots) if shots else None)
    ada_bundle, bob_bundle = make_device(), make_device()
    await cenv.own_network(ada_bundle, "ada@example.org")
    await cenv.own_network(bob_bundle, "bob@example.org")
    await trio.to_thread.run_sync(cenv.accounts.add, "op@example.org", PW, "operator")
    ada_net, bob_net = str(ada_bundle.network_uuid), str(bob_bundle.network_uuid)

    # The operator: the overview lists every network.
    await page.open("/console/")
    assert await page.title() == "Log in - fleetgate"
    await page.shot("login")
    await page.login("op@example.org")
    assert await page.title() == "Fleet - fleetgate"
    text = await page.text()
    assert ada_net in text and bob_net in text
    await page.shot("overview")
    await page.open(f"/console/networks/{ada_net}")
    assert ada_net in await page.text()
    assert await page.run(lambda: len(chrome.find_elements("css selector", "svg.chart"))) >= 1
    await page.shot("network")

    # Drag across the chart: the page reloads with that time span, fewer reports drawn.
    from selenium.webdriver.common.by import By

    def reports() -> int:
        return int(chrome.find_element(By.CSS_SELECTOR, "svg.chart")
                   .get_attribute("data-reports"))

    before = await page.run(reports)

    def drag() -> None:
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.support.ui import WebDriverWait

        svg = chrome.find_element(By.CSS_SELECTOR, "svg.chart")
        width = svg.size["width"]
        (ActionChains(chrome).move_to_element_with_offset(svg, -width // 4, 0)
         .click_and_hold().move_by_offset(width // 2, 0).release().perform())
        WebDriverWait(chrome, 20).until(lambda d: "from=" in d.current_url)

    await page.run(drag)
    assert 0 < await page.run(reports) < before

    # The overview's search runs on the server: one network left.
    await page.open("/console/")
    await page.fill_submit("#filters", q=bob_net[:8])
    text = await page.text()
    assert bob_net in text and ada_net not in text
    await page.run(chrome.delete_all_cookies)

    # An owner: their network only; another owner's URL is a 404 page.
    await page.login("ada@example.org")
    text = await page.text()
    assert ada_net in text and bob_net not in text
    await page.open(f"/console/networks/{bob_net}")
    assert await page.title() == "Not found - fleetgate"
    assert bob_net not in await page.text()
    await page.open("/console/account")
    await page.shot("account")

    # A form whose CSRF token was tampered with in the page is refused.
    await page.run(chrome.execute_script,
                   "document.querySelector('form[action=\"/console/account/details\"] "
                   "input[name=csrf]').value = 'forged'")
    await page.fill_submit('form[action="/console/account/details"]', name="Eve")
    assert await page.title() == "Forbidden - fleetgate"

    # Deleting the account leaves no row of it or its network.
    await page.open("/console/account")
    await page.fill_submit('form[action="/console/account/delete"]', confirm="DELETE")
    assert await page.title() == "Account deleted - fleetgate"
    for path in (cenv.data / DB_NAME, cenv.data / "accounts.db"):
        db = sqlite3.connect(path)
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            if table == "audit":  # keeps the record that the network was erased, by design
                continue
            assert not [r for r in db.execute(f"SELECT * FROM {table}") if ada_net in repr(r)]
        db.close()


async def test_overview_updates_live_and_a_control_reaches_the_device(cenv, make_device,
                                                                      chrome):
    from httphelpers import Device
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    page = Page(chrome, f"https://127.0.0.1:{cenv.http[1]}", None)
    bundle = make_device()
    await cenv.own_network(bundle, "ada@example.org")
    net = str(bundle.network_uuid)
    cenv.stop_the_minute()  # the reports below are read back whole
    await page.login("ada@example.org")
    cell = f'tr[data-network="{net}"] td.status'
    assert await page.run(lambda: chrome.find_element(By.CSS_SELECTOR, cell).text) == "offline"

    # The device connects while the page is open: the row turns online with no reload.
    device = Device(*cenv.mqtt, bundle, client_id="live")
    (_, rc) = await device.connect()
    assert rc == 0
    await page.run(lambda: WebDriverWait(chrome, 30).until(
        lambda d: d.find_element(By.CSS_SELECTOR, cell).text == "online"))

    # The device reports: the figures (counted as reports are accepted) move, live.
    def figure(css: str) -> str:
        return chrome.find_element(By.CSS_SELECTOR, css).text

    assert await page.run(figure, "#reports-per-minute") == "0"
    row_figure = f'tr[data-network="{net}"] td.reports-per-minute'
    assert await page.run(figure, row_figure) == "0"
    batch = {"reports": [{"data": 20 + i} for i in range(7)]}
    device.client.publish("report/thermo/temp", json.dumps(batch), qos=1)
    await page.run(lambda: WebDriverWait(chrome, 30).until(
        lambda d: figure("#reports-per-minute") != "0"))
    assert float(await page.run(figure, "#reports-per-minute")) >= 7
    assert float(await page.run(figure, row_figure)) >= 7

    # A control typed on the network page reaches the real device.
    await device.subscribe("control/#", 1)
    await page.open(f"/console/networks/{net}")
    target = await page.run(lambda: chrome.find_element(
        By.XPATH, "//tr[td[1]='target']//form").get_attribute("action"))
    await page.fill_submit(f'form[action="{urlsplit(target).path}"]', data="21.5")
    assert "sent" in await page.text()
    message = await device.message()
    assert message.topic == "control/thermo/target"
    assert b"21.5" in message.payload
    await device.close()


async def test_a_labels_claim_link_fills_in_the_owner_code_after_login(cenv, make_device,
                                                                      chrome):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from ca.labels import claim_link

    page = Page(chrome, f"https://127.0.0.1:{cenv.http[1]}", None)
    bundle = make_device()
    await cenv.connect(bundle)
    await trio.to_thread.run_sync(cenv.accounts.add, "ada@example.org", PW, "owner")
    code = json.loads((bundle.dir / "device.json").read_text())["owner_code"]

    # What the label's QR code holds, opened before logging in: the page goes on by itself
    # to the console, which asks for a login first.
    await page.open(claim_link(page.base, code).removeprefix(page.base))
    await page.run(lambda: WebDriverWait(chrome, 30).until(
        lambda d: d.title == "Log in - fleetgate"))
    assert code not in chrome.current_url
    await page.fill_submit("#login", email="ada@example.org", password=PW)
    box = await page.run(lambda: chrome.find_element(By.CSS_SELECTOR, "#claim input[name=code]"))
    assert await page.run(box.get_attribute, "value") == code
    await page.run(lambda: chrome.find_element(By.CSS_SELECTOR, "#claim button").click())
    await page.run(lambda: WebDriverWait(chrome, 30).until(
        lambda d: d.title == "Network - fleetgate"))
    assert str(bundle.network_uuid) in await page.text()
    # Claimed: the code is forgotten, the form is empty again.
    await page.open("/console/")
    box = await page.run(lambda: chrome.find_element(By.CSS_SELECTOR, "#claim input[name=code]"))
    assert await page.run(box.get_attribute, "value") == ""
