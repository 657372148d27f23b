"""The cluster's tables in PostgreSQL, as numbered migrations (apart from the store's).

`MIGRATIONS` is an ordered list of (number, purpose, SQL); `migrate(conn)` applies the
missing ones in one transaction under an advisory lock (nodes starting together apply each
once) and records them in `cluster_schema_version`. Append new migrations at the end with
the next number; never edit an applied one.

Migration 1 (the registry and the bus):
- `cluster_sessions`: the cluster's session registry, one row per (network, client id)
  on the node that owns it (`node`), live or not; a persistent session's row outlives its
  connection (the owner queues for it). The live connection's will is kept in the row so
  another node can publish it when the owner dies (`reap`).
- `cluster_interest`: which node has subscribers in which network (relay goes only there).
- `cluster_bars`: networks barred by an erasure (the bar list in cluster mode).
- `cluster_relay_bodies`: bus payloads too large for a NOTIFY (8000 bytes), by id.

Migration 2 (nodes.py): `cluster_nodes`, one row per node: its heartbeat (time, live
connections, addresses, bus lag) and, once its heartbeat lapsed, who declared it dead and
when its reaping (wills published, sessions taken over) was done.
"""

from __future__ import annotations

from typing import Any

from ..storage.postgres.tracks import migrate_track

LOCK_ID = 0x666C6565  # pg_advisory_xact_lock key: one migrating node at a time

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "cluster registry, interest, bars, relay bodies", """
CREATE TABLE cluster_sessions (
    network uuid NOT NULL,
    client_id text NOT NULL,
    node text NOT NULL,
    since timestamptz NOT NULL,
    live boolean NOT NULL,
    persistent boolean NOT NULL,
    will_topic text,
    will_payload bytea,
    will_qos smallint,
    will_retain boolean,
    PRIMARY KEY (network, client_id)
);
CREATE INDEX cluster_sessions_node ON cluster_sessions (node);
CREATE TABLE cluster_interest (
    network uuid NOT NULL,
    node text NOT NULL,
    PRIMARY KEY (network, node)
);
CREATE INDEX cluster_interest_node ON cluster_interest (node);
CREATE TABLE cluster_bars (
    network uuid PRIMARY KEY,
    since timestamptz NOT NULL,
    by_operator text NOT NULL
);
CREATE TABLE cluster_relay_bodies (
    id bigserial PRIMARY KEY,
    node text NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),
    body text NOT NULL
);
"""),
    (2, "node heartbeats", """
CREATE TABLE cluster_nodes (
    name         text PRIMARY KEY,
    incarnation  uuid NOT NULL,
    host         text NOT NULL,
    pid          integer NOT NULL,
    started      timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    connections  integer NOT NULL DEFAULT 0,
    mqtt         text NOT NULL DEFAULT '',
    http         text NOT NULL DEFAULT '',
    version      text NOT NULL DEFAULT '',
    bus_lag      double precision,
    dead_at      timestamptz,
    reaped_by    text,
    reaped_at    timestamptz
);
"""),
]


def migrate(conn: Any) -> int:
    """Apply the missing migrations on the psycopg connection `conn` (blocking; run it in a
    worker thread). Returns the schema version now in force."""
    return migrate_track(conn, "cluster_schema_version", LOCK_ID, MIGRATIONS)
