"""The accounts in PostgreSQL: their own migration track, one data key for every node (never
in the database), two nodes sharing accounts and sessions, and a lost connection."""

from __future__ import annotations

import os
import shutil
import threading

import psycopg
import pytest

from gateway.accounts import AccountsUnavailable, DataKeyError, pgschema
from gateway.accounts.pgstore import PostgresAccountStore
from tests.unit.accounts.accounthelpers import Clock

PW = "correct horse battery"


def _open(url, key):
    return PostgresAccountStore.open(url, key, now_us=Clock())


def test_migrations_apply_once_when_nodes_start_together(postgres_url):
    conns = [psycopg.connect(postgres_url, autocommit=True) for _ in range(4)]
    versions, errors = [], []

    def start(conn):
        try:
            versions.append(pgschema.migrate(conn))
        except Exception as exc:  # noqa: BLE001 - the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    latest = pgschema.MIGRATIONS[-1][0]
    assert versions == [latest] * 4
    with conns[0] as conn:
        rows = conn.execute("SELECT version FROM console_schema_version").fetchall()
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE 'console\\_%'")}
    assert rows == [(n,) for n, _, _ in pgschema.MIGRATIONS]
    assert tables == {*pgschema.TABLES, "console_schema_version"}
    for conn in conns[1:]:
        assert pgschema.migrate(conn) == latest  # again: nothing to do
        conn.close()


def test_two_nodes_share_accounts_and_sessions(postgres_url, tmp_path):
    key_a = tmp_path / "a" / "data.key"
    node_a = _open(postgres_url, key_a)
    (tmp_path / "b").mkdir()
    key_b = tmp_path / "b" / "data.key"
    shutil.copy2(key_a, key_b)  # the operator copies the key file, as the server key
    node_b = _open(postgres_url, key_b)
    try:
        ada = node_a.add("ada@example.org", PW, "owner", {"name": "Ada"})
        assert node_b.authenticate("ADA@example.org", PW) == ada
        token, session = node_a.open_session(ada.id, "127.0.0.1")
        assert node_b.session(token).csrf == session.csrf
        node_b.end_session(token)
        assert node_a.session(token) is None
    finally:
        node_a.close()
        node_b.close()


def test_a_node_without_the_clusters_key_refuses(postgres_url, tmp_path):
    first = _open(postgres_url, tmp_path / "a" / "data.key")
    first.add("ada@example.org", PW, "owner")
    first.close()
    with pytest.raises(DataKeyError, match="copy the data key file"):
        _open(postgres_url, tmp_path / "missing" / "data.key")
    assert not (tmp_path / "missing" / "data.key").exists()  # no stray key made
    from gateway.accounts import DataKey
    DataKey.open(tmp_path / "other" / "data.key")  # a key of its own, not the cluster's
    with pytest.raises(DataKeyError, match="does not hold data key"):
        _open(postgres_url, tmp_path / "other" / "data.key")
    shutil.copy2(tmp_path / "a" / "data.key", tmp_path / "open.key")
    os.chmod(tmp_path / "open.key", 0o644)
    with pytest.raises(DataKeyError, match="chmod 600"):
        _open(postgres_url, tmp_path / "open.key")


def test_after_rotation_a_node_with_the_old_key_refuses(postgres_url, tmp_path):
    store = _open(postgres_url, tmp_path / "a" / "data.key")
    store.add("ada@example.org", PW, "owner")
    shutil.copy2(tmp_path / "a" / "data.key", tmp_path / "old.key")
    store.rotate_key()
    store.close()
    with pytest.raises(DataKeyError, match="does not hold"):
        _open(postgres_url, tmp_path / "old.key")
    again = _open(postgres_url, tmp_path / "a" / "data.key")
    assert again.authenticate("ada@example.org", PW).email == "ada@example.org"
    again.close()


def test_the_key_never_enters_the_database(postgres_url, postgres_server, tmp_path):
    import subprocess

    store = _open(postgres_url, tmp_path / "data.key")
    store.add("ada@example.org", PW, "owner", {"name": "Ada"})
    store.close()
    dump = subprocess.run([str(postgres_server.bin_dir / "pg_dump"), "--dbname",
                           postgres_url], check=True, capture_output=True).stdout
    kid, secret = (tmp_path / "data.key").read_text().split()
    import base64
    assert secret.encode() not in dump
    assert base64.b64decode(secret).hex().encode() not in dump
    assert kid.encode() in dump  # only its id, to refuse a wrong key file


def _kill_connections(url: str) -> int:
    """End the store's connections from the server side; returns once their backends exited
    (PostgreSQL 14's pg_terminate_backend with a timeout waits for that)."""
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.info.server_version < 140000:
            pytest.skip("waiting for a terminated backend needs PostgreSQL 14")
        return conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 30000)) "
            "FROM pg_stat_activity WHERE application_name = 'fleetgate-console'").fetchone()[0]


def test_a_connection_the_server_ended_is_replaced_before_use(postgres_url, tmp_path):
    store = _open(postgres_url, tmp_path / "data.key")
    try:
        ada = store.add("ada@example.org", PW, "owner")
        assert _kill_connections(postgres_url) == 1
        assert store.get(ada.id) == ada
        assert _kill_connections(postgres_url) == 1
        assert store.record_owner_code("net-a", b"\x01" * 32)  # a write: a new connection too
        assert _kill_connections(postgres_url) == 1
        bob = store.add("bob@example.org", PW, "owner")  # and a transaction
        assert store.authenticate("bob@example.org", PW) == bob
    finally:
        store.close()


def test_an_unreachable_server_is_accounts_unavailable(tmp_path):
    url = f"postgresql://nobody@/db?host={tmp_path}&port=1"
    with pytest.raises(AccountsUnavailable, match="cannot reach PostgreSQL"):
        _open(url, tmp_path / "data.key")
