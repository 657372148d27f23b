"""The gateway's audit chain: the same hash rule as the CA's (one description fits both),
appends through the writer, an erasure's entry in its own transaction."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
import uuid

from hypothesis import given
from hypothesis import strategies as st
from storehelpers import MIGRATION_5_COLUMNS, T0, model_decl

from ca import audit as ca_audit
from gateway.storage import DB_NAME, open_sqlite_store
from gateway.storage import audit as gw_audit
from gateway.storage.sqlite import audit_ops
from gateway.storage.sqlite.schema import LATEST

text = st.text(max_size=40)


@given(st.integers(1, 2**40), text, text, text, text, st.dictionaries(text, text, max_size=3),
       st.text("0123456789abcdef", min_size=64, max_size=64))
def test_the_gateway_hash_is_the_ca_hash(seq, at, actor, action, subject, details, prev):
    canon = gw_audit.canonical(details)
    assert canon == ca_audit._canonical(details)
    assert gw_audit.entry_hash(seq, at, actor, action, subject, canon, prev) == \
        ca_audit.entry_hash(seq, at, actor, action, subject, canon, prev)


def test_the_ca_verifier_accepts_a_gateway_chain():
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE audit (seq INTEGER PRIMARY KEY, at, actor, action, subject,"
                 " details, prev_hash, hash)")
    for n in range(3):
        record = gw_audit.AuditRecord(f"op{n}", T0, (gw_audit.AuditEvent("erase", str(n),
                                                                         {"k": n}),))
        audit_ops.append(conn, record)
    assert ca_audit.verify(conn) == 3 == audit_ops.verify(conn)
    assert [e.subject for e in ca_audit.entries(conn)] == ["0", "1", "2"]


async def test_an_erasure_and_its_entry_commit_together_and_the_entry_outlives_the_rows(
        open_store):
    gone = uuid.uuid4()
    async with open_store() as store:
        await store.declare_model(gone, model_decl(), T0)
        entry = gw_audit.AuditRecord("alice", T0, (gw_audit.AuditEvent(
            "erase", str(gone), {"barred": True}),))
        assert await store.erase_network(gone, entry) is True
        assert await store.erase_network(gone, entry) is False  # unknown: nothing recorded
        await store.append_audit(gw_audit.AuditRecord("bob", T0 + dt.timedelta(hours=1), (
            gw_audit.AuditEvent("bar_lift", str(gone)),)))
        found = await store.audit_entries()
        assert [(e.seq, e.actor, e.action, e.subject) for e in found] == [
            (1, "alice", "erase", str(gone)), (2, "bob", "bar_lift", str(gone))]
        assert [e.seq for e in await store.audit_entries(since=T0 + dt.timedelta(minutes=1))
                ] == [2]
        assert await store.get_tree(gone) is None
        assert gw_audit.check(dataclasses.astuple(e) for e in found) == 2


async def test_migration_4_adds_the_audit_table_to_a_version_3_store(tmp_path):
    async with open_sqlite_store(tmp_path) as store:
        await store.declare_model(uuid.uuid4(), model_decl(), T0)
    conn = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    conn.execute("DROP TABLE audit")
    for table, column in MIGRATION_5_COLUMNS:  # migration 5's, applied again after 4
        conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    async with open_sqlite_store(tmp_path) as store:
        assert store.schema_version == LATEST
        await store.append_audit(gw_audit.AuditRecord("op", T0, (
            gw_audit.AuditEvent("bar_lift", "x"),)))
        assert [e.seq for e in await store.audit_entries()] == [1]
