"""The seam under the SQL both stores share (gateway/storage/sql/dialect.py): each engine's
`Dialect` gives the shared statements the same meaning on a real connection of that engine.
(The Store contract tests and the state machine hold the operations built on it.)"""

from __future__ import annotations

import sqlite3
import uuid

import psycopg
import pytest

from gateway.storage.postgres.dialect import PostgresDialect
from gateway.storage.sql.dialect import translate_placeholders
from gateway.storage.sqlite.dialect import SQLiteDialect

TABLE = ("CREATE TABLE t (id bigint PRIMARY KEY, uuid {uuid} NOT NULL, "
         "name text{collation} NOT NULL, data {blob} NOT NULL)")
ROWS = [(1, "b", b"\x01"), (2, "B", b"\x02\x03"), (3, "a", b""), (4, "_", b"\xff" * 5)]


def test_placeholders_become_psycopgs_once_and_a_percent_sign_is_refused():
    cache: dict[str, str] = {}
    first = translate_placeholders("SELECT ? WHERE x = ?", cache)
    assert first == "SELECT %s WHERE x = %s"
    assert translate_placeholders("SELECT ? WHERE x = ?", cache) is first
    with pytest.raises(ValueError):
        translate_placeholders("SELECT '100%' WHERE x = ?", cache)


@pytest.fixture(params=("sqlite", "postgresql"))
def db(request, tmp_path):
    """A Dialect on a fresh database of each engine, holding `ROWS` in table `t`."""
    if request.param == "sqlite":
        conn = sqlite3.connect(tmp_path / "t.sqlite3", isolation_level=None)
        dialect, types = SQLiteDialect(conn), {"uuid": "TEXT", "blob": "BLOB", "collation": ""}
    else:
        conn = psycopg.connect(request.getfixturevalue("postgres_url"), autocommit=True)
        # A linguistic collation on the column (ICU's root: "_" < "a" < "b" < "B"), as a
        # database's default may be: the byte order must not depend on it.
        dialect, types = PostgresDialect(conn), {"uuid": "uuid", "blob": "bytea",
                                                 "collation": ' COLLATE "und-x-icu"'}
    dialect.execute(TABLE.format(**types))
    dialect.executemany("INSERT INTO t (id, uuid, name, data) VALUES (?, ?, ?, ?)",
                        [(i, dialect.uuid_in(uuid.UUID(int=i)), name, data)
                         for i, name, data in ROWS])
    yield dialect
    conn.close()


def test_a_uuid_goes_in_and_comes_back_as_the_same_uuid(db):
    wanted = uuid.UUID(int=3)
    (column,) = db.execute("SELECT uuid FROM t WHERE uuid = ?", (db.uuid_in(wanted),)
                           ).fetchone()
    assert db.uuid_out(column) == wanted


def test_an_id_list_parameter_selects_those_ids_and_only_them(db):
    found = {i for (i,) in db.execute(f"SELECT id FROM t WHERE {db.id_in('id')}",
                                      (db.id_list([4, 2, 9]),))}
    assert found == {2, 4}
    assert not db.execute(f"SELECT id FROM t WHERE {db.id_in('id')}",
                          (db.id_list([]),)).fetchall()


def test_text_ordered_by_its_bytes_is_the_same_order_on_both_engines(db):
    names = [n for (n,) in db.execute(f"SELECT name FROM t ORDER BY name{db.byte_order}")]
    assert names == sorted(n for _, n, _ in ROWS)  # Python orders str by code point


def test_length_of_binary_data_counts_bytes(db):
    lengths = dict(db.execute("SELECT id, length(data) FROM t").fetchall())
    assert lengths == {i: len(data) for i, _, data in ROWS}


def test_executemany_of_no_rows_writes_nothing(db):
    db.executemany("INSERT INTO t (id, uuid, name, data) VALUES (?, ?, ?, ?)", [])
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == len(ROWS)
