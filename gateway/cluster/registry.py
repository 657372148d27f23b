"""The cluster's session registry and interest set: the SQL, run in a worker thread.

Each function takes a psycopg connection (autocommit) as its last argument so it runs
through `PgLane.run(partial(fn, ...))`. One row of `cluster_sessions` per session key
(network, client id) says which node owns it; the claim that moves it is one transaction
under the network's advisory lock, which also makes the per-network session count
(`max_sessions_per_network`) hold across nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import psycopg


@dataclass(frozen=True, slots=True)
class Will:
    """A live session's will, kept in its registry row (mounted topic)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class Claimed:
    """What a claim found: refused (the network's cap), or the node that owned the key."""

    refused: bool
    previous: str | None = None
    """The node that owned the row before (None: a new key, or this node already)."""
    previous_will: Will | None = None
    """The will of that node's live connection, as its row kept it (None: none, offline)."""


def claim(network: UUID, client_id: str, node: str, persistent: bool, will: Will | None,
          max_sessions: int, conn: psycopg.Connection) -> Claimed:
    """Make `node` the owner of the live session (network, client_id), or refuse when the
    network already holds `max_sessions` sessions cluster-wide and this key is not one."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (str(network),))
        row = conn.execute("SELECT node, live, will_topic, will_payload, will_qos, "
                           "will_retain FROM cluster_sessions WHERE network = %s AND "
                           "client_id = %s", (network, client_id)).fetchone()
        if row is None:
            (count,) = conn.execute("SELECT count(*) FROM cluster_sessions WHERE network = %s",
                                    (network,)).fetchone()  # type: ignore[misc]
            if count >= max_sessions:
                return Claimed(True)
        kept = (None,) * 4 if will is None else (will.topic, will.payload, will.qos,
                                                  will.retain)
        conn.execute(
            "INSERT INTO cluster_sessions (network, client_id, node, since, live, persistent, "
            "will_topic, will_payload, will_qos, will_retain) "
            "VALUES (%s, %s, %s, now(), true, %s, %s, %s, %s, %s) "
            "ON CONFLICT (network, client_id) DO UPDATE SET node = excluded.node, "
            "since = excluded.since, live = true, persistent = excluded.persistent, "
            "will_topic = excluded.will_topic, will_payload = excluded.will_payload, "
            "will_qos = excluded.will_qos, will_retain = excluded.will_retain",
            (network, client_id, node, persistent, *kept))
    if row is None or row[0] == node:
        return Claimed(False)
    _, live, topic, payload, qos, retain = row
    will = Will(topic, bytes(payload), qos, retain) if live and topic is not None else None
    return Claimed(False, row[0], will)


def ended(network: UUID, client_id: str, node: str, persistent: bool,
          conn: psycopg.Connection) -> None:
    """The session's connection on `node` ended: a persistent session stays owned (offline,
    no will), a clean one goes. No-op when another node claimed the key meanwhile."""
    if persistent:
        conn.execute("UPDATE cluster_sessions SET live = false, will_topic = NULL, "
                     "will_payload = NULL WHERE network = %s AND client_id = %s AND node = %s",
                     (network, client_id, node))
    else:
        conn.execute("DELETE FROM cluster_sessions WHERE network = %s AND client_id = %s "
                     "AND node = %s", (network, client_id, node))


def adopt_orphans(keys: list[tuple[UUID, str]], node: str,
                  conn: psycopg.Connection) -> set[tuple[str, str]]:
    """Persistent sessions the store holds (`keys`) with no registry row become `node`'s;
    returns every key `node` owns now, as (network string, client id)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO cluster_sessions (network, client_id, node, since, live, persistent) "
            "VALUES (%s, %s, %s, now(), false, true) ON CONFLICT DO NOTHING",
            [(network, client, node) for network, client in keys])
        # Rows a previous run of this node left live (it stopped without cleanup) stay as
        # they are until `reap` of that run publishes their wills.
        rows = cur.execute("SELECT network, client_id FROM cluster_sessions WHERE node = %s",
                           (node,)).fetchall()
    return {(str(network), client) for network, client in rows}


def reap(dead: str, node: str, conn: psycopg.Connection
         ) -> tuple[list[tuple[UUID, str, Will | None]], list[tuple[UUID, str]]]:
    """Take over what the dead node `dead` owned, in one transaction: returns its live
    sessions with their wills (None: no will) and the persistent sessions now owned by
    `node`; its clean sessions and its interest rows are gone."""
    with conn.transaction():
        rows = conn.execute(
            "SELECT network, client_id, live, persistent, will_topic, will_payload, will_qos, "
            "will_retain FROM cluster_sessions WHERE node = %s FOR UPDATE", (dead,)).fetchall()
        conn.execute("DELETE FROM cluster_sessions WHERE node = %s AND NOT persistent", (dead,))
        conn.execute("UPDATE cluster_sessions SET node = %s, live = false, since = now(), "
                     "will_topic = NULL, will_payload = NULL WHERE node = %s", (node, dead))
        conn.execute("DELETE FROM cluster_interest WHERE node = %s", (dead,))
    wills = [(network, client, None if topic is None else
              Will(topic, bytes(payload), qos, retain))
             for network, client, live, _, topic, payload, qos, retain in rows if live]
    persistent = [(network, client) for network, client, _, p, *_ in rows if p]
    return wills, persistent


def nodes_of(network: UUID, node: str, conn: psycopg.Connection) -> set[str]:
    """The other nodes holding sessions of `network`."""
    rows = conn.execute("SELECT DISTINCT node FROM cluster_sessions WHERE network = %s AND "
                        "node <> %s", (network, node)).fetchall()
    return {r[0] for r in rows}


def live_anywhere(network: UUID, conn: psycopg.Connection) -> bool:
    """Whether `network` has a live session on any node."""
    return conn.execute("SELECT EXISTS (SELECT 1 FROM cluster_sessions WHERE network = %s "
                        "AND live)", (network,)).fetchone()[0]  # type: ignore[index]


def sessions_of(network: UUID, conn: psycopg.Connection) -> int:
    """The network's sessions cluster-wide (live or persistent)."""
    (count,) = conn.execute("SELECT count(*) FROM cluster_sessions WHERE network = %s",
                            (network,)).fetchone()  # type: ignore[misc]
    return count


# -- the interest set -------------------------------------------------------------------


def set_interest(node: str, changes: list[tuple[str, bool]], conn: psycopg.Connection) -> None:
    """Apply (network, present) changes of `node`'s interest, in order."""
    with conn.transaction(), conn.cursor() as cur:
        for network, present in changes:
            if present:
                cur.execute("INSERT INTO cluster_interest (network, node) VALUES (%s, %s) "
                            "ON CONFLICT DO NOTHING", (network, node))
            else:
                cur.execute("DELETE FROM cluster_interest WHERE network = %s AND node = %s",
                            (network, node))


def reset_interest(node: str, networks: list[str], conn: psycopg.Connection
                   ) -> dict[str, set[str]]:
    """Replace `node`'s interest rows by `networks`; return the other nodes' interest."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("DELETE FROM cluster_interest WHERE node = %s", (node,))
        cur.executemany("INSERT INTO cluster_interest (network, node) VALUES (%s, %s)",
                        [(network, node) for network in networks])
        rows = cur.execute("SELECT network, node FROM cluster_interest WHERE node <> %s",
                           (node,)).fetchall()
    out: dict[str, set[str]] = {}
    for network, other in rows:
        out.setdefault(str(network), set()).add(other)
    return out


# -- bars -------------------------------------------------------------------------------


def load_bars(conn: psycopg.Connection) -> list[tuple[UUID, object, str]]:
    return conn.execute("SELECT network, since, by_operator FROM cluster_bars").fetchall()


def write_bar(network: UUID, since: object, by: str | None, conn: psycopg.Connection) -> None:
    """Bar `network` (`by` None: lift its bar)."""
    if by is None:
        conn.execute("DELETE FROM cluster_bars WHERE network = %s", (network,))
    else:
        conn.execute("INSERT INTO cluster_bars (network, since, by_operator) VALUES (%s, %s, %s) "
                     "ON CONFLICT DO NOTHING", (network, since, by))
