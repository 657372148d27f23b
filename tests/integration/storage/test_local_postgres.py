"""The disposable PostgreSQL server the suite, the cluster demo and the benchmarks start."""

from __future__ import annotations

import os

import psycopg


def test_fresh_database_is_empty_and_writable(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        conn.execute("CREATE TABLE t (id bigint PRIMARY KEY)")
        conn.execute("INSERT INTO t VALUES (1)")
        assert tables == (0,)
        assert conn.execute("SELECT id FROM t").fetchall() == [(1,)]


def test_server_runs_unprivileged_on_a_socket_only(postgres_server, postgres_url) -> None:
    with psycopg.connect(postgres_url) as conn:
        listen = conn.execute("SHOW listen_addresses").fetchone()
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        # While the connection is open: its backend process exits once it is closed.
        owner = os.stat(f"/proc/{pid}").st_uid
    assert listen == ("",)
    assert owner != 0
