"""The accounts file: encryption at rest, login, owner codes, sessions, erasure."""

from __future__ import annotations

import sqlite3

import pytest

from gateway.accounts import AccountExists, AccountStore, BadLogin, OwnerCodeRefused, passwords
from gateway.accounts.errors import AccountError
from gateway.accounts.store import code_hash

PW = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def store(tmp_path):
    s = AccountStore.in_folder(tmp_path, now_us=Clock())
    yield s
    s.close()


def _raw_rows(path) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return [row for t in tables for row in db.execute(f"SELECT * FROM {t}")]
    finally:
        db.close()


def test_stored_rows_never_hold_the_email_or_details_in_clear(store, tmp_path):
    store.add("ada@example.org", PW, "owner", {"name": "Ada Lovelace", "phone": "+44 1"})
    store.close()
    raw = open(tmp_path / "accounts.db", "rb").read()
    for clear in (b"ada@example.org", b"Ada Lovelace", b"+44 1", b"example"):
        assert clear not in raw
    for row in _raw_rows(tmp_path / "accounts.db"):
        assert "ada@" not in repr(row)


def test_argon2id_parameters():
    stored = passwords.hash_password(PW)
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert passwords.verify(stored, PW)
    assert not passwords.verify(stored, PW + "x")


def test_login_unknown_email_and_wrong_password_are_the_same_error(store):
    store.add("ada@example.org", PW, "operator")
    with pytest.raises(BadLogin) as unknown:
        store.authenticate("nobody@example.org", PW)
    with pytest.raises(BadLogin) as wrong:
        store.authenticate("ada@example.org", "wrong password")
    assert str(unknown.value) == str(wrong.value)
    assert store.authenticate("ADA@example.org", PW).role == "operator"


def test_duplicate_email_and_bad_input_are_refused(store):
    store.add("ada@example.org", PW, "owner")
    with pytest.raises(AccountExists):
        store.add("Ada@Example.org", PW, "owner")
    with pytest.raises(AccountError, match="email"):
        store.add("not-an-email", PW, "owner")
    with pytest.raises(AccountError, match="password"):
        store.add("bob@example.org", "short", "owner")
    with pytest.raises(AccountError, match="unknown detail"):
        store.add("bob@example.org", PW, "owner", {"ssn": "1"})


def test_owner_code_claims_once(store):
    ada = store.add("ada@example.org", PW, "owner")
    bob = store.add("bob@example.org", PW, "owner")
    net = "8a1b0a2e-6f55-4a1e-9a39-0f0f0f0f0f0f"
    assert store.record_owner_code(net, code_hash("C0DE" * 8))
    assert not store.record_owner_code(net, code_hash("other"))  # first hash stays
    with pytest.raises(OwnerCodeRefused):
        store.claim(ada.id, "unknown")
    assert store.claim(ada.id, "c0de" * 8) == net
    with pytest.raises(OwnerCodeRefused):
        store.claim(bob.id, "c0de" * 8)
    assert store.owns(ada.id, net) and not store.owns(bob.id, net)
    assert store.networks_of(ada.id) == [net]


def test_password_change_ends_other_sessions(store):
    ada = store.add("ada@example.org", PW, "owner")
    keep, _ = store.open_session(ada.id, "127.0.0.1")
    other, _ = store.open_session(ada.id, "10.0.0.2")
    assert store.change_password(ada.id, PW, PW + "!", keep_session=keep) == 1
    assert store.session(keep) is not None
    assert store.session(other) is None
    with pytest.raises(BadLogin):
        store.authenticate("ada@example.org", PW)


def test_sessions_listed_revoked_and_expire(store):
    ada = store.add("ada@example.org", PW, "owner")
    bob = store.add("bob@example.org", PW, "owner")
    token, session = store.open_session(ada.id, "127.0.0.1")
    listed = store.sessions_of(ada.id)
    assert [s.id for s in listed] == [session.id]
    assert not store.revoke_session(bob.id, session.id)  # not bob's
    assert store.revoke_session(ada.id, session.id)
    assert store.session(token) is None
    token, _ = store.open_session(ada.id, "127.0.0.1")
    store._now.now += 10
    assert store.session(token, max_idle_us=5) is None


def test_delete_leaves_no_row_and_returns_owned_networks(store, tmp_path):
    ada = store.add("ada@example.org", PW, "owner", {"name": "Ada"})
    bob = store.add("bob@example.org", PW, "owner")
    store.record_owner_code("net-a", code_hash("a"))
    store.record_owner_code("net-b", code_hash("b"))
    store.claim(ada.id, "a")
    store.claim(bob.id, "b")
    store.open_session(ada.id, "127.0.0.1")
    assert store.delete(ada.id) == ["net-a"]
    rows = _raw_rows(tmp_path / "accounts.db")
    assert all(ada.id not in row[:3] or row[0] == bob.id for row in rows)
    assert not any("net-a" in repr(row) for row in rows)
    assert store.networks_of(bob.id) == ["net-b"]


def test_rotate_key_reencrypts_and_login_still_works(store, tmp_path):
    store.add("ada@example.org", PW, "owner", {"name": "Ada"})
    old_id = store.key.current_id
    before = _raw_rows(tmp_path / "accounts.db")
    new_id = store.rotate_key()
    assert new_id != old_id
    after = _raw_rows(tmp_path / "accounts.db")
    assert before != after
    account = store.authenticate("ada@example.org", PW)
    assert account.details == {"name": "Ada"}
    assert (tmp_path / "data.key").read_text().count("\n") == 1


def test_accounts_file_is_0600(store, tmp_path):
    import stat
    store.add("ada@example.org", PW, "owner")
    for name in ("accounts.db", "accounts.db-wal"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
