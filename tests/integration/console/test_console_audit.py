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
