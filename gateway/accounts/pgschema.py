"""The console's tables in the PostgreSQL store, as numbered migrations of their own.

`MIGRATIONS` is an ordered list of (number, purpose, SQL); `migrate(conn)` applies the
missing ones in one transaction under an advisory lock (nodes starting together apply each
once) and records them in `console_schema_version`, apart from the store's and the cluster's
tracks. Append new migrations at the end with the next number; never edit an applied one.

Migration 1 (the accounts file's three tables, as `gateway.accounts.store` has them in
SQLite, plus the data key's id):
- `console_accounts`: one row per person; `lookup` the keyed hash of the email, `email` and
  `details` AES-GCM ciphertexts, `password` an Argon2id hash. No column in clear names anyone.
- `console_owner_codes`: a network's owner-code hash, and who claimed it when.
- `console_sessions`: console logins by the SHA-256 of their cookie token.
- `console_data_key`: one row, the id (4 bytes, not the key) of the data key the rows are
  sealed under, so a node started with another key file refuses instead of writing rows
  the others cannot open (`pgstore.bind_key`).
"""

from __future__ import annotations

from typing import Any

from ..storage.postgres.tracks import migrate_track

LOCK_ID = 0x636F6E73  # pg_advisory_xact_lock key ("cons"): one node migrating or binding the key

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "console accounts, owner codes, sessions, data key id", """
CREATE TABLE console_accounts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lookup      bytea NOT NULL UNIQUE,
    role        text NOT NULL CHECK (role IN ('operator', 'owner')),
    email       bytea NOT NULL,
    details     bytea,
    password    text NOT NULL,
    created_us  bigint NOT NULL
);
CREATE TABLE console_owner_codes (
    network     text PRIMARY KEY,
    code_hash   bytea NOT NULL UNIQUE,
    owner_id    bigint REFERENCES console_accounts (id),
    claimed_us  bigint
);
CREATE INDEX console_owner_codes_by_owner ON console_owner_codes (owner_id);
CREATE TABLE console_sessions (
    token_hash  bytea PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES console_accounts (id),
    csrf        text NOT NULL,
    created_us  bigint NOT NULL,
    seen_us     bigint NOT NULL,
    address     text NOT NULL
);
CREATE INDEX console_sessions_by_account ON console_sessions (account_id);
CREATE TABLE console_data_key (
    only_row    boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    key_id      bytea NOT NULL
);
"""),
]

TABLES = ("console_accounts", "console_owner_codes", "console_sessions", "console_data_key")


def migrate(conn: Any) -> int:
    """Apply the missing migrations on the psycopg connection `conn` (blocking; run it in a
    worker thread). Returns the schema version now in force."""
    return migrate_track(conn, "console_schema_version", LOCK_ID, MIGRATIONS)
