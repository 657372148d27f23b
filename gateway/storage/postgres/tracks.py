"""Numbered migration tracks beside the store's schema: the cluster's tables and the
console's accounts each keep their own list and version table in the store's database.

`migrate_track` applies what is missing of one track in one transaction under an advisory
lock, so nodes starting together apply each migration once, and records each in the track's
version table (number, purpose, when). Append new migrations at the end of a track with the
next number; never edit an applied one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Migration = tuple[int, str, str]
"""(number, purpose, SQL)."""


def migrate_track(conn: Any, version_table: str, lock_id: int,
                  migrations: Sequence[Migration]) -> int:
    """Apply the missing `migrations` on the psycopg connection `conn` (blocking; run it in
    a worker thread), recording them in `version_table`. Returns the version now in force."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_id,))
        conn.execute(f"CREATE TABLE IF NOT EXISTS {version_table} ("
                     "version integer PRIMARY KEY, purpose text NOT NULL, "
                     "applied timestamptz NOT NULL DEFAULT now())")
        (current,) = conn.execute(f"SELECT coalesce(max(version), 0) FROM {version_table}"
                                  ).fetchone()
        for number, purpose, sql in migrations:
            if number > current:
                conn.execute(sql)
                conn.execute(f"INSERT INTO {version_table} (version, purpose) "
                             "VALUES (%s, %s)", (number, purpose))
                current = number
    return current
