"""Revoking from a network's console page: the real online signer (`fleet-ca serve` in its
own process, on a unix socket), a real gateway reading the CA's crl.pem, paho devices."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from consolehelpers import PW, start_console_env
from httphelpers import Device

from ca import CAHome
from gateway.storage import open_sqlite_store


@pytest.fixture
def home(tmp_path: Path):
    # A CA of its own: this test revokes, and a running signer rewrites the CA's crl.pem.
    h = CAHome.init(tmp_path / "ca", name="revoke test", passphrase=None)
    h.issue_server(h.path / "server", dns=["localhost"], ips=["127.0.0.1"])
    yield h
    h.close()


@pytest.fixture
async def signer(home: CAHome, tmp_path: Path):
    """`fleet-ca serve --unix` as a process; its JSON log lines read until `listening`."""
    sock = tmp_path / "signer.sock"
    env = dict(os.environ, FLEET_CA_HOME=str(home.path))
    async with trio.open_nursery() as nursery:
        proc = await nursery.start(lambda task_status: trio.run_process(
            [sys.executable, "-m", "ca", "serve", "--unix", str(sock)], env=env,
            stderr=subprocess.PIPE, check=False, task_status=task_status))
        lines = _lines(proc.stderr)
        async for line in lines:
            if json.loads(line)["event"] == "listening":
                break
        yield f"unix:{sock}", lines
        proc.terminate()


async def _lines(stream):
    buf = b""
    async for chunk in stream:
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode()


async def _next_update(browser, wanted) -> dict:
    """Read the live-update stream (server-sent events) until an update `wanted(doc)`."""
    import http.client

    def run() -> dict:
        conn = http.client.HTTPSConnection(browser.host, browser.port,
                                           context=browser.context, timeout=30)
        try:
            conn.request("GET", "/console/events", headers={"cookie": "; ".join(
                f"{k}={v}" for k, v in browser.cookies.items())})
            response = conn.getresponse()
            assert response.status == 200
            while line := response.fp.readline():
                if line.startswith(b"data: ") and wanted(doc := json.loads(line[6:])):
                    return doc
            raise AssertionError("the stream ended")
        finally:
            conn.close()
    return await trio.to_thread.run_sync(run)


@pytest.fixture
async def renv(home: CAHome, signer, tmp_path: Path):
    data = tmp_path / "data"
    async with open_sqlite_store(data) as store:
        async with trio.open_nursery() as nursery:
            yield await start_console_env(home, data, nursery, store, signer=signer[0])
            nursery.cancel_scope.cancel()


async def test_an_owner_revokes_their_device_from_the_page_and_its_session_is_cut(
        renv, home: CAHome, signer, tmp_path: Path):
    ada_bundle, bob_bundle = home.issue_devices(tmp_path / "devices", count=2)
    ada, _ = await renv.own_network(ada_bundle, "ada@example.org")
    bob, _ = await renv.own_network(bob_bundle, "bob@example.org")
    net = str(ada_bundle.network_uuid)
    device = Device(*renv.mqtt, ada_bundle, client_id="live")
    (_, rc) = await device.connect()
    assert rc == 0

    # Another owner cannot revoke it: the same 404 as a network that does not exist.
    refused = await bob.post(f"/console/networks/{net}/revoke",
                             {"confirm": net, "reason": "key-compromise"})
    assert refused.status == 404
    assert home.inventory.get(ada_bundle.serial).status == "valid"
    assert not device.disconnected.is_set()

    # The page offers the form; without the UUID typed as confirmation nothing happens.
    page = await ada.get(f"/console/networks/{net}")
    assert 'id="revoke"' in page.text and "key-compromise" in page.text
    answer = await ada.post(f"/console/networks/{net}/revoke",
                            {"confirm": "yes", "reason": "key-compromise"})
    assert answer.status == 422
    assert home.inventory.get(ada_bundle.serial).status == "valid"

    # Confirmed: the signer revokes and rewrites the CRL; the gateway cuts the live session.
    answer = await ada.post(f"/console/networks/{net}/revoke",
                            {"confirm": net, "reason": "key-compromise"})
    assert answer.status == 200, answer.text
    assert format(ada_bundle.serial, "x") in answer.text.lower()
    assert await device.wait_disconnected()
    assert '"event": "revoked"' in renv.log.getvalue() and net in renv.log.getvalue()
    await device.close()

    # The CA's record: revoked with the reason, and the audit trail names who asked.
    record = home.inventory.get(ada_bundle.serial)
    assert (record.status, record.reason) == ("revoked", "key-compromise")
    db = sqlite3.connect(home.path / "inventory.db")
    rows = db.execute("SELECT actor, details FROM audit WHERE action = 'revoke' AND subject = ?",
                      (format(ada_bundle.serial, "x"),)).fetchall()
    db.close()
    assert len(rows) == 1
    actor, details = rows[0]
    assert actor == "unix-socket"
    assert json.loads(details)["by"].startswith("owner:")
    assert home.inventory.get(bob_bundle.serial).status == "valid"

    # The device trying again is refused: the operators' live figure of refusals counts it.
    renv.stop_the_minute()  # read back whole, not weighed down past a minute boundary
    await trio.to_thread.run_sync(renv.accounts.add, "op@example.org", PW, "operator")
    op = renv.browser()
    assert (await op.login("op@example.org", PW)).status == 303
    assert (await _next_update(op, lambda doc: True))["activity"]["refused_per_minute"] == 0
    again = Device(*renv.mqtt, ada_bundle, client_id="again")
    assert await again.connect_refused()
    await _next_update(op, lambda doc: doc["activity"]["refused_per_minute"] >= 1)

    # A second revocation is answered clearly.
    answer = await ada.post(f"/console/networks/{net}/revoke",
                            {"confirm": net, "reason": "key-compromise"})
    assert answer.status == 409 and "already revoked" in answer.text


async def test_without_a_signer_the_page_says_how_to_revoke_and_has_no_button(
        cenv, make_device):
    bundle = make_device()
    ada, _ = await cenv.own_network(bundle, "ada@example.org")
    net = str(bundle.network_uuid)
    page = await ada.get(f"/console/networks/{net}")
    assert 'id="revoke"' not in page.text
    assert f"fleet-ca revoke {net}" in page.text
    answer = await ada.post(f"/console/networks/{net}/revoke",
                            {"confirm": net, "reason": "key-compromise"})
    assert answer.status == 409


async def test_deleting_an_account_revokes_its_networks_certificates_too(renv, home: CAHome,
                                                                         tmp_path: Path):
    [bundle] = home.issue_devices(tmp_path / "devices")
    ada, _ = await renv.own_network(bundle, "ada@example.org")
    answer = await ada.post("/console/account/delete", {"confirm": "DELETE",
                                                       "networks": "erase"})
    assert answer.status == 200
    record = home.inventory.get(bundle.serial)
    assert (record.status, record.reason) == ("revoked", "cessation-of-operation")
    assert renv.gateway.metrics.console.revocations.value == 1
