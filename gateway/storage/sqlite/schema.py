"""The SQLite schema as numbered migrations, and the connection settings.

`PRAGMA user_version` holds the number of the last migration applied; `migrate` applies the
missing ones in order, each in its own transaction, and refuses a database from a newer
fleetgate. Never edit a released migration: add the next number.

Why the schema looks like this:
- Integer surrogate keys inside, UUIDs (text, unique) at the edges: the hot table `state_log`
  then carries an 8-byte state id instead of a 36-byte UUID, which keeps the (state, time)
  index small and inserts fast.
- `state_log(state_id, ts_us)` is the index for the reads that matter: one value's history
  over a time range, and its latest state (the last entry of that index range). Times are
  integer microseconds since the epoch, UTC.
- Every table that belongs to a network carries `network_id` (or reaches it through a state),
  so erasure is a handful of indexed deletes, and a test proves no row survives it.
"""

from __future__ import annotations

import sqlite3

from ..errors import SchemaError

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, """
CREATE TABLE networks (
    id          INTEGER PRIMARY KEY,
    uuid        TEXT NOT NULL UNIQUE,
    created_us  INTEGER NOT NULL
);
CREATE TABLE devices (
    id          INTEGER PRIMARY KEY,
    uuid        TEXT NOT NULL UNIQUE,
    network_id  INTEGER NOT NULL REFERENCES networks(id),
    name        TEXT NOT NULL,
    description TEXT,
    created_us  INTEGER NOT NULL,
    updated_us  INTEGER NOT NULL,
    UNIQUE (network_id, name)
);
CREATE TABLE value_nodes (
    id          INTEGER PRIMARY KEY,
    uuid        TEXT NOT NULL UNIQUE,
    device_id   INTEGER NOT NULL REFERENCES devices(id),
    network_id  INTEGER NOT NULL REFERENCES networks(id),
    name        TEXT NOT NULL,
    decl        TEXT NOT NULL,          -- ValueDecl.to_json(), JSON
    created_us  INTEGER NOT NULL,
    updated_us  INTEGER NOT NULL,
    UNIQUE (device_id, name)
);
CREATE INDEX value_nodes_by_network ON value_nodes(network_id);
CREATE TABLE states (
    id          INTEGER PRIMARY KEY,
    uuid        TEXT NOT NULL UNIQUE,
    value_id    INTEGER NOT NULL REFERENCES value_nodes(id),
    network_id  INTEGER NOT NULL REFERENCES networks(id),
    kind        INTEGER NOT NULL,       -- 1 Report, 2 Control
    UNIQUE (value_id, kind)
);
CREATE INDEX states_by_network ON states(network_id);
CREATE TABLE state_log (
    id          INTEGER PRIMARY KEY,
    state_id    INTEGER NOT NULL REFERENCES states(id),
    ts_us       INTEGER NOT NULL,       -- the device's timestamp (or receive time)
    received_us INTEGER NOT NULL,       -- the gateway's receive time
    data        TEXT NOT NULL
);
CREATE INDEX state_log_by_time ON state_log(state_id, ts_us);
CREATE TABLE connection_status (
    network_id        INTEGER PRIMARY KEY REFERENCES networks(id),
    connections       INTEGER NOT NULL,
    connected_since_us INTEGER,
    last_seen_us      INTEGER,
    cert_serial       TEXT,
    client_id         TEXT,
    disconnect_reason TEXT
);
CREATE TABLE connection_log (
    id          INTEGER PRIMARY KEY,
    network_id  INTEGER NOT NULL REFERENCES networks(id),
    event       TEXT NOT NULL,
    at_us       INTEGER NOT NULL,
    client_id   TEXT,
    cert_serial TEXT,
    reason      TEXT
);
CREATE INDEX connection_log_by_network ON connection_log(network_id, at_us);
CREATE TABLE retained (
    network_id  INTEGER NOT NULL REFERENCES networks(id),
    topic       TEXT NOT NULL,
    payload     BLOB NOT NULL,
    qos         INTEGER NOT NULL,
    PRIMARY KEY (network_id, topic)
) WITHOUT ROWID;
CREATE TABLE sessions (
    network_id  INTEGER NOT NULL REFERENCES networks(id),
    client_id   TEXT NOT NULL,
    PRIMARY KEY (network_id, client_id)
) WITHOUT ROWID;
CREATE TABLE subscriptions (
    network_id  INTEGER NOT NULL,
    client_id   TEXT NOT NULL,
    filter      TEXT NOT NULL,
    qos         INTEGER NOT NULL,
    PRIMARY KEY (network_id, client_id, filter),
    FOREIGN KEY (network_id, client_id) REFERENCES sessions(network_id, client_id)
) WITHOUT ROWID;
CREATE TABLE queued (
    id          INTEGER PRIMARY KEY,
    network_id  INTEGER NOT NULL,
    client_id   TEXT NOT NULL,
    topic       TEXT NOT NULL,
    payload     BLOB NOT NULL,
    qos         INTEGER NOT NULL,
    retain      INTEGER NOT NULL,
    FOREIGN KEY (network_id, client_id) REFERENCES sessions(network_id, client_id)
);
CREATE INDEX queued_by_session ON queued(network_id, client_id, id);
"""),
    # A message queued for many offline sessions is stored once (`queued_messages`) and
    # referenced by each session that holds it (`queued_refs`, ordered by id). The message
    # row goes in the same transaction as its last reference. Old rows keep their ids.
    (2, """
CREATE TABLE queued_messages (
    id          INTEGER PRIMARY KEY,
    network_id  INTEGER NOT NULL REFERENCES networks(id),
    topic       TEXT NOT NULL,
    payload     BLOB NOT NULL
);
CREATE INDEX queued_messages_by_network ON queued_messages(network_id);
CREATE TABLE queued_refs (
    id          INTEGER PRIMARY KEY,
    network_id  INTEGER NOT NULL,
    client_id   TEXT NOT NULL,
    message_id  INTEGER NOT NULL REFERENCES queued_messages(id),
    qos         INTEGER NOT NULL,
    retain      INTEGER NOT NULL,
    FOREIGN KEY (network_id, client_id) REFERENCES sessions(network_id, client_id)
);
CREATE INDEX queued_refs_by_session ON queued_refs(network_id, client_id, id);
CREATE INDEX queued_refs_by_message ON queued_refs(message_id);
INSERT INTO queued_messages (id, network_id, topic, payload)
    SELECT id, network_id, topic, payload FROM queued;
INSERT INTO queued_refs (id, network_id, client_id, message_id, qos, retain)
    SELECT id, network_id, client_id, id, qos, retain FROM queued;
DROP TABLE queued;
"""),
    # What each network holds in `state_log` (its readings and commands), kept up to date in
    # the transaction that inserts (or erases) them, so the stored-bytes quota never needs a
    # SUM over the table at run time: this backfill is the only one. A row counts its data's
    # UTF-8 bytes plus ROW_OVERHEAD (sql/write_side.py: the row and its index entry).
    (3, """
CREATE TABLE network_usage (
    network_id   INTEGER PRIMARY KEY REFERENCES networks(id),
    stored_bytes INTEGER NOT NULL
);
INSERT INTO network_usage (network_id, stored_bytes)
    SELECT s.network_id, sum(length(CAST(l.data AS BLOB)) + 48)
    FROM state_log l JOIN states s ON s.id = l.state_id GROUP BY s.network_id;
"""),
    # The audit trail (gateway/storage/audit.py): append-only, hash-chained, the CA's entry
    # shape. No network_id: an erasure deletes a network's rows, never the record of them.
    (4, """
CREATE TABLE audit (
    seq         INTEGER PRIMARY KEY,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    details     TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit(at);
"""),
    # MQTT 5 state that survives a restart: a message's properties as wire bytes (empty for
    # 3.1.1) and its expiry (microseconds since the epoch; NULL: never), on queued and
    # retained messages; a session's expiry interval in seconds (NULL: never expires, the
    # 3.1.1 clean_session=0 rule). A subscription's `qos` column holds the whole grant (the
    # MQTT 5 options byte + subscription identifier * 256): a 3.1.1 grant is its QoS, so
    # existing rows need no rewrite.
    (5, """
ALTER TABLE retained ADD COLUMN properties BLOB NOT NULL DEFAULT x'';
ALTER TABLE retained ADD COLUMN expires_us INTEGER;
ALTER TABLE queued_messages ADD COLUMN properties BLOB NOT NULL DEFAULT x'';
ALTER TABLE queued_messages ADD COLUMN expires_us INTEGER;
ALTER TABLE sessions ADD COLUMN expiry_interval INTEGER;
"""),
)

LATEST = MIGRATIONS[-1][0]
SAFETY_CHECKPOINT_PAGES = 10_000


def configure_writer(conn: sqlite3.Connection, *, synchronous: str) -> None:
    """WAL (readers never block the writer), fsync per commit unless told otherwise."""
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise SchemaError(f"cannot switch the database to WAL (got {mode})")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    # Deleted content is overwritten with zeros, always: switching it on only around an
    # erasure (and off after) left every later delete and page reuse without it, so rows of
    # an erased network could survive in freed pages. Never switched off on this connection.
    if conn.execute("PRAGMA secure_delete=ON").fetchone()[0] != 1:
        raise SchemaError("this SQLite cannot turn secure_delete on")
    # The (state, time) index takes inserts all over its leaves (every value reports); a
    # page cache that holds its hot pages keeps the writer from re-reading them per batch.
    conn.execute("PRAGMA cache_size=-65536")  # KiB: 64 MiB
    # Checkpoints run beside the writer, on their own connection (store.py): a checkpoint
    # inside a commit stalled every producer behind it. This automatic one (~40 MB of WAL)
    # is only the safety net for when the background checkpointer falls behind.
    conn.execute(f"PRAGMA wal_autocheckpoint={SAFETY_CHECKPOINT_PAGES}")


def configure_reader(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA query_only=ON")
    conn.execute("PRAGMA busy_timeout=5000")


def migrate(conn: sqlite3.Connection) -> int:
    """Apply missing migrations; return the schema version now in force."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > LATEST:
        raise SchemaError(f"database schema {version} is newer than this fleetgate ({LATEST})")
    for number, sql in MIGRATIONS:
        if number <= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in sql.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        version = number
    return version
