"""The console on a cluster: two real `fleet-gateway serve --store postgresql://...` nodes
sharing one PostgreSQL and one data key file (copied, as the server key is). An owner who
signs up through node A is signed in on node B with the same cookie, signs in through B with
a fresh browser, and a sign-out through B ends the session on A; the first operator, made
with `fleet-gateway account add-operator --store`, signs in through either node."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from processes import NodeProcess

sys.path.insert(0, str(Path(__file__).parents[1] / "http"))
sys.path.insert(0, str(Path(__file__).parents[1] / "console"))

from consolehelpers import PW, Browser  # noqa: E402
from httphelpers import client_context  # noqa: E402

from gateway.cli import main  # noqa: E402


@pytest.fixture
def console_nodes(ca_home, postgres_url, tmp_path):
    (tmp_path / "pw").write_text(PW + "\n")
    key_a = tmp_path / "a" / "data.key"
    assert main(["account", "add-operator", "op@example.org", "--store", postgres_url,
                 "--data-key", str(key_a), "--password-file", str(tmp_path / "pw")]) == 0
    (tmp_path / "b").mkdir()
    shutil.copy2(key_a, tmp_path / "b" / "data.key")
    started = [NodeProcess(ca_home.path, postgres_url, name, "--data-key",
                           str(tmp_path / name / "data.key")) for name in ("a", "b")]
    for node in started:
        node.line("cluster_joined")
    yield started
    for node in started:
        if node.proc.poll() is None:
            node.proc.kill()
        node.proc.wait()


def _browser(ca_home, node: NodeProcess) -> Browser:
    host, port = node.address("http")
    return Browser(host, port, client_context(ca_home.path / "root.crt"))


def _on(browser: Browser, ca_home, node: NodeProcess) -> Browser:
    """The same browser (its cookies), its next requests to `node` (the load balancer)."""
    moved = _browser(ca_home, node)
    moved.cookies = browser.cookies
    return moved


async def test_an_owner_signed_in_through_a_is_signed_in_on_b(console_nodes, ca_home):
    a, b = console_nodes
    on_a = _browser(ca_home, a)
    token = (await on_a.get("/console/signup")).csrf()
    made = await on_a.post("/console/signup", {"csrf": token, "email": "ada@example.org",
                                               "password": PW, "again": PW})
    assert made.status == 303 and made.header("location") == "/console/"
    on_b = _on(on_a, ca_home, b)
    account = await on_b.get("/console/account")
    assert account.status == 200 and "ada@example.org" in account.text

    fresh = _browser(ca_home, b)  # the account made through A signs in through B
    assert (await fresh.login("ada@example.org", PW)).status == 303
    assert (await fresh.login("ada@example.org", PW + "x")).status != 303

    # Signing out through B ends the session everywhere: A no longer knows the cookie.
    kept = dict(on_b.cookies)  # what a stolen copy of the cookie would hold
    assert kept and (await _on(on_a, ca_home, a).get("/console/account")).status == 200
    assert (await on_b.post("/console/logout", {})).status == 303
    stale = _browser(ca_home, a)
    stale.cookies = kept
    again = await stale.get("/console/account")
    assert again.status == 303 and again.header("location") == "/console/login"


async def test_the_operator_made_on_the_command_line_signs_in_on_every_node(console_nodes,
                                                                            ca_home):
    for node in console_nodes:
        browser = _browser(ca_home, node)
        assert (await browser.login("op@example.org", PW)).status == 303
        assert (await browser.get("/console/")).status == 200


def test_a_node_with_another_data_key_refuses_to_start(console_nodes, ca_home, postgres_url,
                                                       tmp_path):
    from gateway.accounts import DataKey

    DataKey.open(tmp_path / "c" / "data.key")  # a fresh key: not the one the accounts use
    node = NodeProcess(ca_home.path, postgres_url, "c", "--data-key",
                       str(tmp_path / "c" / "data.key"))
    assert node.proc.wait(30) == 3
    said = node.line("<text>")["line"]
    assert "does not hold data key" in said and "copy the data key file" in said


def test_without_a_data_key_the_console_is_off(console_nodes, ca_home, postgres_url):
    node = NodeProcess(ca_home.path, postgres_url, "d")
    try:
        node.line("cluster_joined")
        browser = _browser(ca_home, node)
        answer = browser._sync("GET", "/console/login", None, {})
        assert answer.status == 404
    finally:
        node.stop()


async def test_an_accounts_file_beside_the_store_is_named_at_start(console_nodes, ca_home,
                                                             postgres_url, tmp_path):
    from gateway.accounts import AccountStore

    data = tmp_path / "old-data"
    data.mkdir()
    shutil.copy2(tmp_path / "a" / "data.key", data / "data.key")
    AccountStore.in_folder(data, now_us=lambda: 0).close()  # as an earlier release left it
    node = NodeProcess(ca_home.path, postgres_url, "e", "--data", str(data))
    try:
        said = node.line("console_accounts_file_unused")
        assert said["file"] == str(data / "accounts.db")
        assert "fleet-gateway account import" in said["detail"]
        node.line("cluster_joined")
        browser = _browser(ca_home, node)  # its console uses the cluster's accounts
        assert (await browser.login("op@example.org", PW)).status == 303
    finally:
        node.stop()
