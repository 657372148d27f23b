"""`fleet-gateway account add-operator`: the first operator from the command line."""

from __future__ import annotations

from gateway.accounts import AccountStore
from gateway.cli import main


def test_add_operator_then_login(tmp_path, capsys):
    (tmp_path / "pw").write_text("a long enough password\n")
    argv = ["account", "add-operator", "op@example.org", "--data", str(tmp_path / "data"),
            "--password-file", str(tmp_path / "pw")]
    assert main(argv) == 0
    assert main(argv) == 6
    assert "exists" in capsys.readouterr().err
    store = AccountStore.in_folder(tmp_path / "data", now_us=lambda: 0)
    assert store.authenticate("op@example.org", "a long enough password").role == "operator"


def test_add_operator_needs_a_data_folder(tmp_path, capsys):
    assert main(["account", "add-operator", "op@example.org"]) == 3
    assert "no data folder" in capsys.readouterr().err


def test_rotate_key_keeps_logins_and_changes_the_key(tmp_path, capsys):
    (tmp_path / "pw").write_text("a long enough password\n")
    data = tmp_path / "data"
    assert main(["account", "add-operator", "op@example.org", "--data", str(data),
                 "--password-file", str(tmp_path / "pw")]) == 0
    before = (data / "data.key").read_text()
    assert main(["account", "rotate-key", "--data", str(data)]) == 0
    after = (data / "data.key").read_text()
    assert before != after and after.count("\n") == 1
    store = AccountStore.in_folder(data, now_us=lambda: 0)
    assert store.authenticate("op@example.org", "a long enough password").email == \
        "op@example.org"


def test_account_changes_from_the_command_line_are_audit_entries(tmp_path, capsys):
    import json

    (tmp_path / "pw").write_text("a long enough password\n")
    data = tmp_path / "data"
    assert main(["account", "add-operator", "op@example.org", "--data", str(data),
                 "--password-file", str(tmp_path / "pw")]) == 0
    assert main(["account", "rotate-key", "--data", str(data)]) == 0
    capsys.readouterr()
    assert main(["audit", "show", "--json", "--data", str(data)]) == 0
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["action"], e["subject"].split(":")[0]) for e in entries] == [
        ("account.add-operator", "operator"), ("account.rotate-key", entries[1]["subject"])]
    assert "op@example.org" not in json.dumps(entries)  # the account's id, not its address
    assert main(["audit", "verify", "--data", str(data)]) == 0


def test_add_operator_and_rotate_key_on_the_postgresql_store(tmp_path, postgres_url, capsys):
    import json

    from gateway.accounts.pgstore import PostgresAccountStore

    (tmp_path / "pw").write_text("a long enough password\n")
    key = tmp_path / "etc" / "data.key"
    argv = ["account", "add-operator", "op@example.org", "--store", postgres_url,
            "--data-key", str(key), "--password-file", str(tmp_path / "pw")]
    assert main(argv) == 0
    assert "created in PostgreSQL" in capsys.readouterr().out
    assert not (tmp_path / "data").exists()  # no data folder needed
    assert main(argv) == 6
    assert "exists" in capsys.readouterr().err
    before = key.read_text()
    assert main(["account", "rotate-key", "--store", postgres_url, "--data-key", str(key)]) == 0
    assert "copy this file to every node" in capsys.readouterr().out
    assert key.read_text() != before
    store = PostgresAccountStore.open(postgres_url, key, now_us=lambda: 0)
    try:
        assert store.authenticate("op@example.org", "a long enough password").role == \
            "operator"
    finally:
        store.close()
    assert main(["audit", "show", "--json", "--store", postgres_url]) == 0
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["action"] for e in entries] == ["account.add-operator", "account.rotate-key"]


def test_the_postgresql_accounts_need_a_data_key_and_a_reachable_server(tmp_path, capsys,
                                                                       postgres_url):
    (tmp_path / "pw").write_text("a long enough password\n")
    add = ["account", "add-operator", "op@example.org", "--password-file", str(tmp_path / "pw")]
    assert main([*add, "--store", postgres_url]) == 3
    assert "no data key" in capsys.readouterr().err
    assert main([*add, "--store", "mysql://db/x", "--data-key", str(tmp_path / "k")]) == 8
    capsys.readouterr()
    nowhere = f"postgresql://nobody@/db?host={tmp_path}&port=1"
    assert main([*add, "--store", nowhere, "--data-key", str(tmp_path / "k")]) == 9
    assert "cannot reach PostgreSQL" in capsys.readouterr().err


def test_import_moves_the_accounts_file_into_postgresql(tmp_path, postgres_url, capsys):
    from gateway.accounts import DataKey
    from gateway.accounts.pgstore import PostgresAccountStore
    from gateway.accounts.store import code_hash

    data, pw = tmp_path / "data", "a long enough password"
    (tmp_path / "pw").write_text(pw + "\n")
    assert main(["account", "add-operator", "op@example.org", "--data", str(data),
                 "--password-file", str(tmp_path / "pw")]) == 0
    old = AccountStore.in_folder(data, now_us=lambda: 5)
    ada = old.add("ada@example.org", pw, "owner", {"name": "Ada"})
    old.record_owner_code("net-a", code_hash("a"))
    old.claim(ada.id, "a")
    token, _ = old.open_session(ada.id, "127.0.0.1")
    old.close()
    DataKey.open(tmp_path / "other.key")
    imp = ["account", "import", "--data", str(data), "--store", postgres_url]
    assert main([*imp, "--data-key", str(tmp_path / "other.key")]) == 6  # not its key
    assert "which is not in" in capsys.readouterr().err
    assert main(imp) == 0
    assert "2 account(s) copied" in capsys.readouterr().out
    assert main(imp) == 6  # once only
    assert "already" in capsys.readouterr().err
    store = PostgresAccountStore.open(postgres_url, data / "data.key", now_us=lambda: 6)
    try:
        assert store.authenticate("ada@example.org", pw) == ada  # same id, details, time
        assert store.authenticate("op@example.org", pw).role == "operator"
        assert store.networks_of(ada.id) == ["net-a"]
        assert store.session(token).account_id == ada.id
        assert store.add("bob@example.org", pw, "owner").id == ada.id + 1
    finally:
        store.close()
    assert main(["account", "import", "--data", str(tmp_path / "nowhere"), "--store",
                 postgres_url]) == 3
