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
