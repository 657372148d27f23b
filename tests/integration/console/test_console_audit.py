"""Console actions in the gateway's audit trail: who (the account as role:id, never its email
address) did what to which network, recorded once each; the chain verifies."""

from __future__ import annotations

import json
import sqlite3

from httphelpers import seed_network, value_uuid

from gateway.storage import DB_NAME
from gateway.storage.sqlite import audit_ops


def trail(data) -> list[tuple[str, str, str, dict]]:
    conn = sqlite3.connect(data / DB_NAME)
    try:
        assert audit_ops.verify(conn) >= 0
        return [(e.actor, e.action, e.subject, json.loads(e.details))
                for e in audit_ops.entries(conn)]
    finally:
        conn.close()


async def test_claim_control_and_account_deletion_are_entries_naming_the_account(
        cenv, make_device):
    bundle = make_device()
    net = str(bundle.network_uuid)
    owner, _ = await cenv.own_network(bundle, "ada@example.org")
    tree = await seed_network(cenv.ingest, bundle.network_uuid, reports=0)
    target = value_uuid(tree, "target")
    sent = await owner.post(f"/console/values/{target}/control", {"data": "21.5"})
    assert sent.status == 200
    refused = await owner.post("/console/account/delete", {"confirm": "nope"})
    assert refused.status == 422  # changed nothing: not recorded
    deleted = await owner.post("/console/account/delete",
                               {"confirm": "DELETE", "networks": "erase"})
    assert deleted.status == 200
    entries = trail(cenv.data)
    (who,) = {actor for actor, *_ in entries if actor.startswith("owner:")}
    assert [(actor, action, subject) for actor, action, subject, _ in entries] == [
        (who, "console.claim", net),
        (f"console:{who}", "control", target),
        (f"console:{who}", "erase", net),
        (who, "console.account.delete", who),
    ]
    assert "ada@example.org" not in json.dumps(entries) and "21.5" not in json.dumps(entries)


async def test_the_audit_page_is_for_operators_and_marks_an_edited_entry(cenv, make_device):
    import trio
    from consolehelpers import PW

    bundle = make_device()
    owner, _ = await cenv.own_network(bundle, "ada@example.org")
    tree = await seed_network(cenv.ingest, bundle.network_uuid, reports=0)
    target = value_uuid(tree, "target")
    assert (await owner.post(f"/console/values/{target}/control", {"data": "21"})).status \
        == 200
    assert (await owner.get("/console/audit")).status == 404  # owners: as if it did not exist
    await trio.to_thread.run_sync(cenv.accounts.add, "op@example.org", PW, "operator")
    operator = cenv.browser()
    assert (await operator.login("op@example.org", PW)).status == 303
    page = await operator.get("/console/audit")
    assert page.status == 200 and 'href="/console/audit"' in page.text
    assert "console.claim" in page.text and f"<td>{target}</td>" in page.text
    assert "BROKEN" not in page.text and "ada@example.org" not in page.text.split("<main>")[1]
    conn = sqlite3.connect(cenv.data / DB_NAME)
    with conn:
        conn.execute("UPDATE audit SET actor = 'someone-else' WHERE seq = 1")
    conn.close()
    page = await operator.get("/console/audit")
    assert "1 entry on this page does not match" in page.text
    assert page.text.count(">BROKEN<") == 1
