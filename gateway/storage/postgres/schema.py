"""The PostgreSQL schema as numbered migrations, and the report table's time partitions.

`schema_version` holds the number of the last migration applied; `migrate` applies the
missing ones in order, each in its own transaction, under an advisory lock (several gateway
nodes may start at once), and refuses a database from a newer fleetgate. Never edit a
released migration: add the next number.

Why the schema looks like this (the SQLite store's reasons hold too: gateway/storage/sqlite/
schema.py): integer surrogate keys inside, UUIDs (the `uuid` type) at the edges, times as
integer microseconds since the epoch, UTC, and every network's rows reachable from its
`network_id` so erasure is a handful of indexed deletes. Then, for PostgreSQL:

- `state_log` is partitioned by range of `ts_us` (the reading's time, device-stamped or
  received), one partition per week (`state_log_w<YYYYMMDD>`, Monday 00:00 UTC), so that
  retention drops a partition instead of deleting rows, and a value's history over a time
  range reads only the weeks it covers. This week's and next week's partitions are created
  at open, and the writer creates next week's ahead as the week turns (so the Monday
  rollover never waits for one); another week's is created in the transaction that first
  needs it, for weeks from `PAST_WEEKS` before now to `AHEAD_WEEKS` after; a reading
  stamped outside that window (a device clock far off) goes to the DEFAULT partition
  `state_log_other`, so what a device sends never decides how many tables exist.
- No foreign key from `state_log` to `states`: PostgreSQL checks one with a trigger and a
  row lock per inserted reading, which cost about as much as the insert itself. The writer
  takes the same lock once per state per batch instead (`FOR KEY SHARE`, ops.py), and an
  erasure locks its network's states `FOR UPDATE` before it deletes, so a batch of another
  node either commits before the erasure (whose deletes then see its rows) or finds the
  states gone and fails: an erased network leaves no reading behind either way.
- One index on `state_log`: unique `(state_id, ts_us, dedup)`. It serves a value's history
  and latest reading (its prefix), and stores a device-stamped reading once: `dedup` is a
  16-byte digest of the data for a device-stamped reading, NULL otherwise (NULLs never
  conflict, so every receipt without a device timestamp is kept), and the insert says
  `ON CONFLICT DO NOTHING`. A unique index on a partitioned table must hold the partition
  key: `ts_us` is in it.
- Message properties (MQTT 5, wire bytes) and expiry on retained and queued messages, and
  a session's expiry interval, as the SQLite store's migration 5 has them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from ..errors import SchemaError

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, """
CREATE TABLE networks (
    id          bigserial PRIMARY KEY,
    uuid        uuid NOT NULL UNIQUE,
    created_us  bigint NOT NULL
);
CREATE TABLE devices (
    id          bigserial PRIMARY KEY,
    uuid        uuid NOT NULL UNIQUE,
    network_id  bigint NOT NULL REFERENCES networks(id),
    name        text NOT NULL,
    description text,
    created_us  bigint NOT NULL,
    updated_us  bigint NOT NULL,
    UNIQUE (network_id, name)
);
CREATE TABLE value_nodes (
    id          bigserial PRIMARY KEY,
    uuid        uuid NOT NULL UNIQUE,
    device_id   bigint NOT NULL REFERENCES devices(id),
    network_id  bigint NOT NULL REFERENCES networks(id),
    name        text NOT NULL,
    decl        text NOT NULL,
    created_us  bigint NOT NULL,
    updated_us  bigint NOT NULL,
    UNIQUE (device_id, name)
);
CREATE INDEX value_nodes_by_network ON value_nodes(network_id);
CREATE TABLE states (
    id          bigserial PRIMARY KEY,
    uuid        uuid NOT NULL UNIQUE,
    value_id    bigint NOT NULL REFERENCES value_nodes(id),
    network_id  bigint NOT NULL REFERENCES networks(id),
    kind        smallint NOT NULL,
    UNIQUE (value_id, kind)
);
CREATE INDEX states_by_network ON states(network_id);
CREATE SEQUENCE state_log_id_seq AS bigint;
CREATE TABLE state_log (
    id          bigint NOT NULL DEFAULT nextval('state_log_id_seq'),
    state_id    bigint NOT NULL,
    ts_us       bigint NOT NULL,
    received_us bigint NOT NULL,
    data        text NOT NULL,
    dedup       bytea
) PARTITION BY RANGE (ts_us);
CREATE UNIQUE INDEX state_log_once ON state_log (state_id, ts_us, dedup);
CREATE TABLE state_log_other PARTITION OF state_log DEFAULT;
CREATE TABLE connection_status (
    network_id         bigint PRIMARY KEY REFERENCES networks(id),
    connections        integer NOT NULL,
    connected_since_us bigint,
    last_seen_us       bigint,
    cert_serial        text,
    client_id          text,
    disconnect_reason  text
);
CREATE TABLE connection_log (
    id          bigserial PRIMARY KEY,
    network_id  bigint NOT NULL REFERENCES networks(id),
    event       text NOT NULL,
    at_us       bigint NOT NULL,
    client_id   text,
    cert_serial text,
    reason      text
);
CREATE INDEX connection_log_by_network ON connection_log(network_id, at_us);
CREATE TABLE retained (
    network_id  bigint NOT NULL REFERENCES networks(id),
    topic       text NOT NULL,
    payload     bytea NOT NULL,
    qos         smallint NOT NULL,
    properties  bytea NOT NULL DEFAULT '',
    expires_us  bigint,
    PRIMARY KEY (network_id, topic)
);
CREATE TABLE sessions (
    network_id      bigint NOT NULL REFERENCES networks(id),
    client_id       text NOT NULL,
    expiry_interval bigint,
    PRIMARY KEY (network_id, client_id)
);
CREATE TABLE subscriptions (
    network_id  bigint NOT NULL,
    client_id   text NOT NULL,
    filter      text NOT NULL,
    qos         integer NOT NULL,
    PRIMARY KEY (network_id, client_id, filter),
    FOREIGN KEY (network_id, client_id) REFERENCES sessions(network_id, client_id)
);
CREATE TABLE queued_messages (
    id          bigserial PRIMARY KEY,
    network_id  bigint NOT NULL REFERENCES networks(id),
    topic       text NOT NULL,
    payload     bytea NOT NULL,
    properties  bytea NOT NULL DEFAULT '',
    expires_us  bigint
);
CREATE INDEX queued_messages_by_network ON queued_messages(network_id);
CREATE TABLE queued_refs (
    id          bigserial PRIMARY KEY,
    network_id  bigint NOT NULL,
    client_id   text NOT NULL,
    message_id  bigint NOT NULL REFERENCES queued_messages(id),
    qos         smallint NOT NULL,
    retain      boolean NOT NULL,
    FOREIGN KEY (network_id, client_id) REFERENCES sessions(network_id, client_id)
);
CREATE INDEX queued_refs_by_session ON queued_refs(network_id, client_id, id);
CREATE INDEX queued_refs_by_message ON queued_refs(message_id);
CREATE TABLE network_usage (
    network_id   bigint PRIMARY KEY REFERENCES networks(id),
    stored_bytes bigint NOT NULL
);
CREATE TABLE audit (
    seq         bigint PRIMARY KEY,
    at          text NOT NULL,
    actor       text NOT NULL,
    action      text NOT NULL,
    subject     text NOT NULL,
    details     text NOT NULL,
    prev_hash   text NOT NULL,
    hash        text NOT NULL
);
CREATE INDEX audit_by_time ON audit(at);
"""),
)

LATEST = MIGRATIONS[-1][0]
MIGRATION_LOCK = 0x666C6565_7467  # advisory lock key: one node migrates at a time
PARTITION_LOCK = 0x666C6565_7470  # ... and creates partitions at a time
WEEK_US = 7 * 86_400 * 1_000_000
_MONDAY_SHIFT_US = 3 * 86_400 * 1_000_000  # 1970-01-01 was a Thursday; weeks start Monday
PAST_WEEKS = 104  # a reading older than this (by its timestamp) goes to state_log_other
AHEAD_WEEKS = 2  # ... and one stamped further ahead than this
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def migrate(conn: psycopg.Connection) -> int:
    """Apply missing migrations; return the schema version now in force.

    Raises:
        SchemaError: the database is from a newer fleetgate.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        if row is None:
            conn.execute("INSERT INTO schema_version (version) VALUES (0)")
            version = 0
        else:
            version = row[0]
    if version > LATEST:
        raise SchemaError(f"database schema {version} is newer than this fleetgate ({LATEST})")
    for number, sql in MIGRATIONS:
        if number <= version:
            continue
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            (now,) = conn.execute("SELECT version FROM schema_version").fetchone()
            if now >= number:  # another node applied it while we waited for the lock
                continue
            conn.execute(sql)
            conn.execute("UPDATE schema_version SET version = %s", (number,))
        version = number
    return version


# -- partitions ------------------------------------------------------------------------------
def week_of(ts_us: int) -> int:
    """The number of the week (Monday 00:00 UTC) holding `ts_us`."""
    return (ts_us + _MONDAY_SHIFT_US) // WEEK_US


def week_bounds(week: int) -> tuple[int, int]:
    start = week * WEEK_US - _MONDAY_SHIFT_US
    return start, start + WEEK_US


def partition_name(week: int) -> str:
    start = EPOCH + timedelta(microseconds=week_bounds(week)[0])
    return f"state_log_w{start:%Y%m%d}"


def in_window(week: int, now_us: int) -> bool:
    """Whether a reading of `week` gets its own partition (else: state_log_other)."""
    current = week_of(now_us)
    return current - PAST_WEEKS <= week <= current + AHEAD_WEEKS


def existing_weeks(conn: psycopg.Connection) -> set[int]:
    """The weeks that have a partition now."""
    weeks = set()
    for (name,) in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'state_log'"):
        if name.startswith("state_log_w"):
            start = datetime.strptime(name[11:], "%Y%m%d").replace(tzinfo=UTC)
            weeks.add(week_of((start - EPOCH) // timedelta(microseconds=1)))
    return weeks


def create_week(conn: psycopg.Connection, week: int) -> None:
    """Create the partition of `week` in the caller's transaction (no-op if it exists).

    A reading of that week stamped while the week was outside the window sits in
    `state_log_other`; PostgreSQL refuses a partition whose range the default partition
    holds rows of, so those rows move into the new table before it is attached.
    """
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
    name = partition_name(week)
    if conn.execute("SELECT 1 FROM pg_class WHERE relname = %s", (name,)).fetchone():
        return
    lo, hi = week_bounds(week)
    stray = conn.execute("SELECT 1 FROM state_log_other WHERE ts_us >= %s AND ts_us < %s "
                         "LIMIT 1", (lo, hi)).fetchone()
    if stray is None:
        conn.execute(f"CREATE TABLE {name} PARTITION OF state_log "
                     f"FOR VALUES FROM ({lo}) TO ({hi})")
        return
    conn.execute(f"CREATE TABLE {name} (LIKE state_log INCLUDING DEFAULTS)")
    conn.execute(f"WITH moved AS (DELETE FROM state_log_other WHERE ts_us >= {lo} "
                 f"AND ts_us < {hi} RETURNING *) INSERT INTO {name} SELECT * FROM moved")
    conn.execute(f"ALTER TABLE state_log ATTACH PARTITION {name} "
                 f"FOR VALUES FROM ({lo}) TO ({hi})")
