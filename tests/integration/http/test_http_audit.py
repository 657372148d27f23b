"""The gateway's audit trail over the real API: erasures, bar lifts and control commands are
hash-chained entries in the store; `fleet-gateway audit verify` finds an edited byte and
names its entry; entries carry identifiers, never readings or addresses."""

from __future__ import annotations

import json
import sqlite3
import uuid

import trio
from httphelpers import seed_network, value_uuid

from gateway.cli import main
from gateway.storage import DB_NAME


def audit_cli(capsys, data, *args: str) -> tuple[int, str, str]:
    code = main(["audit", *args, "--data", str(data)])
    out, err = capsys.readouterr()
    return code, out, err


async def act(env) -> tuple[uuid.UUID, str]:
    """A refused command, an accepted one, an erasure and its bar lifted: returns the network
    and the value commanded."""
    net = uuid.uuid4()
    tree = await seed_network(env.ingest, net, reports=5)
    target = value_uuid(tree, "target")
    op = env.operator()
    assert (await op.request("POST", f"/api/v1/values/{target}/control",
                             {"data": 99})).status == 422  # refused: changes nothing
    assert (await op.request("POST", f"/api/v1/values/{target}/control",
                             {"data": 21.5})).status == 200
    assert (await op.request("DELETE", f"/api/v1/networks/{net}")).status == 200
    assert (await op.request("DELETE", f"/api/v1/bars/{net}")).status == 200
    assert (await op.request("DELETE", f"/api/v1/bars/{net}")).status == 404  # not barred
    return net, target


async def test_erasure_bar_lift_and_control_are_chained_entries_naming_who(env, capsys):
    net, target = await act(env)
    code, out, _ = await trio.to_thread.run_sync(
        lambda: audit_cli(capsys, env.data, "show", "--json"))
    assert code == 0
    entries = [json.loads(line) for line in out.splitlines()]
    assert [(e["seq"], e["actor"], e["action"], e["subject"]) for e in entries] == [
        (1, "test-operator", "control", target),
        (2, "test-operator", "erase", str(net)),
        (3, "test-operator", "bar_lift", str(net)),
    ]
    assert entries[0]["details"] == {"network_uuid": str(net)}  # not the command's value
    assert entries[1]["details"] == {"barred": True, "sessions_closed": 0}
    assert entries[0]["prev_hash"] == "0" * 64
    assert [e["prev_hash"] for e in entries[1:]] == [e["hash"] for e in entries[:-1]]
    # The erasure deleted the network's rows, not the record that it was erased.
    assert await env.store.get_tree(net) is None
    code, out, _ = await trio.to_thread.run_sync(
        lambda: audit_cli(capsys, env.data, "verify"))
    assert code == 0 and out.strip() == "audit trail intact: 3 entries"
    # Identifiers only: no reading, no command value, no address.
    raw = json.dumps(entries)
    assert "21.5" not in raw and "127.0.0.1" not in raw


async def test_editing_one_byte_of_one_entry_is_detected_and_named(env, capsys):
    net, _ = await act(env)
    conn = sqlite3.connect(env.data / DB_NAME)
    (subject,) = conn.execute("SELECT subject FROM audit WHERE seq = 2").fetchone()
    forged = subject[:-1] + ("0" if subject[-1] != "0" else "1")  # one byte of the UUID
    with conn:
        conn.execute("UPDATE audit SET subject = ? WHERE seq = 2", (forged,))
    conn.close()
    code, out, err = await trio.to_thread.run_sync(
        lambda: audit_cli(capsys, env.data, "verify"))
    assert code == 7 and out == ""
    assert "broken at entry 2: its contents do not match its hash" in err


async def test_a_deleted_entry_and_a_rehashed_entry_are_named_too(env, capsys):
    await act(env)
    path = env.data / DB_NAME
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DELETE FROM audit WHERE seq = 2")
    code, _, err = await trio.to_thread.run_sync(lambda: audit_cli(capsys, env.data, "verify"))
    assert code == 7 and "broken at entry 3: entry 2 is missing" in err
    # Rewriting entry 1 with a matching hash of its own still breaks the link to entry 3.
    from gateway.storage.audit import entry_hash
    with conn:
        conn.execute("DELETE FROM audit WHERE seq = 3")
        row = conn.execute("SELECT seq, at, actor, action, subject, details, prev_hash "
                           "FROM audit WHERE seq = 1").fetchone()
        conn.execute("UPDATE audit SET actor = 'someone-else', hash = ? WHERE seq = 1",
                     (entry_hash(row[0], row[1], "someone-else", *row[3:]),))
        conn.execute("INSERT INTO audit VALUES (2, ?, 'x', 'x', 'x', '{}', ?, ?)",
                     (row[1], "f" * 64, entry_hash(2, row[1], "x", "x", "x", "{}", "f" * 64)))
    conn.close()
    code, _, err = await trio.to_thread.run_sync(lambda: audit_cli(capsys, env.data, "verify"))
    assert code == 7 and "broken at entry 2: its prev_hash" in err


async def test_show_since_lists_from_that_time_and_a_folder_without_store_is_exit_3(
        env, capsys, tmp_path):
    await act(env)
    code, out, _ = await trio.to_thread.run_sync(
        lambda: audit_cli(capsys, env.data, "show", "--since", "2999-01-01"))
    assert code == 0 and out == ""
    code, out, _ = await trio.to_thread.run_sync(
        lambda: audit_cli(capsys, env.data, "show", "--since", "2000-01-01"))
    assert code == 0 and len(out.splitlines()) == 3 and " erase " in out
    code, _, err = await trio.to_thread.run_sync(
        lambda: audit_cli(capsys, tmp_path / "nothing", "verify"))
    assert code == 3 and "no store" in err
