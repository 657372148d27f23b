"""`firmware-sim attack --ca-home DIR` only reads the CA home: the certificates it needs
(expired, revoked) are signed in memory, and the home's inventory, CRL and files are left
exactly as they were found."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import trio
from conftest import GatewayRunner
from test_attack import _attack

from ca.store import CAHome


def snapshot(home) -> tuple[dict[str, str], list[str]]:
    """Every file's SHA-256 (but the inventory's), and the inventory's content as SQL."""
    files = {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(home.rglob("*")) if p.is_file()
             and not p.name.startswith("inventory.db")}
    conn = sqlite3.connect(f"file:{home / 'inventory.db'}?mode=ro", uri=True)
    try:
        return files, list(conn.iterdump())
    finally:
        conn.close()


async def attack_with_ca_home(tmp_path, nursery, *, revoke_one: bool
                              ) -> tuple[dict[str, str], tuple, tuple]:
    """A fresh CA home (one device revoked in it, or none), a gateway on it, and the attack
    matrix with --ca-home: (verdict per attempt, home snapshot before, after)."""
    home = CAHome.init(tmp_path / "home", passphrase=None, name="attack test")
    home.issue_server(home.path / "server", dns=["localhost"], ips=["127.0.0.1"])
    attacker, victim, gone = home.issue_devices(tmp_path / "devices", count=3)
    if revoke_one:
        home.revoke(gone.serial, reason="key-compromise")
    home.close()
    runner = GatewayRunner(nursery, home.path, tmp_path / "var")
    await runner.start()
    before = await trio.to_thread.run_sync(snapshot, home.path)
    code, out, err = await _attack(
        "--bundle", str(attacker.dir), "--victim-bundle", str(victim.dir),
        "--ca-home", str(home.path), "--gateway", f"127.0.0.1:{runner.port}", "--json")
    assert code == 0, out + err
    verdicts = {r["attempt"]: r["verdict"] for r in map(json.loads, out.splitlines())}
    return verdicts, before, await trio.to_thread.run_sync(snapshot, home.path)


async def test_attack_leaves_the_ca_home_as_it_found_it(tmp_path, nursery):
    verdicts, before, after = await attack_with_ca_home(tmp_path, nursery, revoke_one=True)
    assert verdicts["revoked certificate of our CA"] == "refused"
    assert verdicts["expired certificate of our CA naming the victim"] == "refused"
    assert after[0] == before[0]  # no file added, removed or changed (crl.pem included)
    assert after[1] == before[1]  # no certificate, revocation or audit entry recorded


async def test_without_a_revoked_serial_the_revoked_attempt_is_not_tried(tmp_path, nursery):
    verdicts, before, after = await attack_with_ca_home(tmp_path, nursery, revoke_one=False)
    assert verdicts["revoked certificate of our CA"] == "not tried"
    assert after == before
