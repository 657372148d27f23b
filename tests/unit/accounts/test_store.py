"""The account store on both engines (SQLite file, PostgreSQL tables): encryption at rest,
login, owner codes, sessions, erasure, key rotation."""

from __future__ import annotations

import pytest

from gateway.accounts import AccountExists, BadLogin, OwnerCodeRefused, passwords
from gateway.accounts.errors import AccountError
from gateway.accounts.store import code_hash
from tests.unit.accounts.accounthelpers import Clock  # noqa: F401 - other tests import it here

PW = "correct horse battery"


def test_stored_rows_never_hold_the_email_or_details_in_clear(store, engine):
    store.add("ada@example.org", PW, "owner", {"name": "Ada Lovelace", "phone": "+44 1"})
    token, _ = store.open_session(store.authenticate("ada@example.org", PW).id, "127.0.0.1")
    store.close()
    raw = engine.raw_dump()  # the SQLite file, or pg_dump of the database
    assert b"console_accounts" in raw or engine.name == "sqlite"
    for clear in (b"ada@example.org", b"Ada Lovelace", b"+44 1", b"example", token.encode(),
                  engine.key_path.read_bytes().split()[1]):
        assert clear not in raw
    for row in engine.raw_rows():
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


def test_delete_leaves_no_row_and_returns_owned_networks(store, engine):
    ada = store.add("ada@example.org", PW, "owner", {"name": "Ada"})
    bob = store.add("bob@example.org", PW, "owner")
    store.record_owner_code("net-a", code_hash("a"))
    store.record_owner_code("net-b", code_hash("b"))
    store.claim(ada.id, "a")
    store.claim(bob.id, "b")
    store.open_session(ada.id, "127.0.0.1")
    assert store.delete(ada.id) == ["net-a"]
    rows = engine.raw_rows()
    assert all(ada.id not in row[:3] or row[0] == bob.id for row in rows)
    assert not any("net-a" in repr(row) for row in rows)
    assert store.networks_of(bob.id) == ["net-b"]


def test_rotate_key_reencrypts_and_login_still_works(store, engine):
    store.add("ada@example.org", PW, "owner", {"name": "Ada"})
    old_id = store.key.current_id
    before = engine.raw_rows()
    new_id = store.rotate_key()
    assert new_id != old_id
    after = engine.raw_rows()
    assert before != after
    account = store.authenticate("ada@example.org", PW)
    assert account.details == {"name": "Ada"}
    assert engine.key_path.read_text().count("\n") == 1
    store.close()
    reopened = engine.open()
    try:
        assert reopened.authenticate("ada@example.org", PW).details == {"name": "Ada"}
    finally:
        reopened.close()


def test_network_erasure_leaves_no_row(store, engine):
    ada = store.add("ada@example.org", PW, "owner")
    store.record_owner_code("net-a", code_hash("a"))
    store.claim(ada.id, "a")
    store.forget_network("net-a")
    assert not any("net-a" in repr(row) for row in engine.raw_rows())
    assert store.networks_of(ada.id) == []
    store.record_owner_code("net-a", code_hash("a2"))  # a network made again: a new code
    assert store.claim(ada.id, "a2") == "net-a"


def test_release_keeps_the_networks_unowned_and_claimable(store, engine):
    ada = store.add("ada@example.org", PW, "owner")
    bob = store.add("bob@example.org", PW, "owner")
    store.record_owner_codes({"net-a": code_hash("a"), "net-b": code_hash("b")})
    store.claim(ada.id, "a")
    assert store.delete(ada.id, release=True) == ["net-a"]
    assert store.claim(bob.id, "a") == "net-a"
    assert [row[0] for row in store.all()] == [bob.id]


def test_accounts_file_is_0600(tmp_path):
    import stat

    from tests.unit.accounts.accounthelpers import sqlite_engine

    store = sqlite_engine(tmp_path).open()
    store.add("ada@example.org", PW, "owner")
    for name in ("accounts.db", "accounts.db-wal", "data.key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    store.close()
