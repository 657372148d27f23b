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
