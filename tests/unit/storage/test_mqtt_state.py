"""Retained messages, persistent sessions and queued QoS 1/2 messages survive a restart."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import timedelta

from storehelpers import T0, count_rows_in

from gateway.storage import (
    DB_NAME,
    EnqueuedMany,
    QueuedMessage,
    RetainedMessage,
    open_sqlite_store,
)
from gateway.storage.sqlite.schema import MIGRATIONS


async def test_retained_messages_are_set_replaced_cleared_and_kept_across_restart(
        open_store, network):
    async with open_store() as store:
        await store.set_retained(network, "a/b", b"1", 1, T0)
        await store.set_retained(network, "a/b", b"2", 0, T0)
        await store.set_retained(network, "c", b"x", 1, T0)
        await store.set_retained(network, "gone", b"y", 1, T0)
        await store.set_retained(network, "gone", b"", 0, T0)  # empty payload clears
        await store.set_retained(uuid.uuid4(), "a/b", b"other", 1, T0)
    async with open_store() as store:
        assert await store.retained(network) == [RetainedMessage("a/b", b"2", 0),
                                                 RetainedMessage("c", b"x", 1)]


async def test_sessions_keep_subscriptions_and_queued_messages_across_restart(
        open_store, network):
    async with open_store() as store:
        await store.save_session(network, "dev1", [("report/#", 1), ("control/+/+", 2)], T0)
        await store.save_session(network, "dev1", [("control/#", 1)], T0)  # replaces
        ids = await store.enqueue(network, "dev1", [("control/a/b", b"1", 1, True),
                                                    ("chat", b"\x00\xff", 2, False),
                                                    ("x", b"3", 1, False)], T0)
        await store.dequeue(network, "dev1", ids[2:])  # delivered and acknowledged
        await store.save_session(network, "dev2", [], T0)
        await store.delete_session(network, "dev2")
    async with open_store() as store:
        (session,) = await store.load_sessions()
        assert (session.network, session.client_id) == (network, "dev1")
        assert session.subscriptions == (("control/#", 1),)
        assert session.queued == (QueuedMessage(ids[0], "control/a/b", b"1", 1, True),
                                  QueuedMessage(ids[1], "chat", b"\x00\xff", 2, False))
        assert await store.load_sessions(uuid.uuid4()) == []


async def test_dequeue_only_touches_the_named_session(store, network):
    (mine,) = await store.enqueue(network, "a", [("t", b"1", 1, False)], T0)
    await store.dequeue(network, "b", [mine])  # wrong session: nothing happens
    await store.dequeue(uuid.uuid4(), "a", [mine])  # wrong network: nothing happens
    (session,) = await store.load_sessions(network)
    assert [m.id for m in session.queued] == [mine]


def _queued_rows(store) -> tuple[int, int]:
    return count_rows_in(store, "queued_messages", "queued_refs")


def _counts(path) -> tuple[int, int]:
    db = sqlite3.connect(path / DB_NAME)
    try:
        return (db.execute("SELECT count(*) FROM queued_messages").fetchone()[0],
                db.execute("SELECT count(*) FROM queued_refs").fetchone()[0])
    finally:
        db.close()


async def test_a_message_for_many_sessions_is_one_row_until_its_last_reference_goes(
        open_store, network):
    clients = [f"dev{i}" for i in range(4)]
    async with open_store() as store:
        for client in clients:
            await store.save_session(network, client, [("cmd/#", 1)], T0)
        ids = await store.wait_committed(await store.submit_session_changes(
            [EnqueuedMany(network, "cmd/x", b"P" * 1000, False,
                          tuple((c, 1 + (i % 2)) for i, c in enumerate(clients)))], T0))
        assert len(ids) == 4 and _queued_rows(store) == (1, 4)
        sessions = await store.load_sessions(queued=False)
        assert [(s.queued, s.queued_count, s.queued_bytes) for s in sessions] == [
            ((), 1, 1000)] * 4
        assert [s.queued_upto for s in sessions] == ids
        # Each session reads its own copy (its own QoS) when it comes back.
        assert await store.load_queued(network, "dev1", ids[1]) == [
            QueuedMessage(ids[1], "cmd/x", b"P" * 1000, 2, False)]
        await store.dequeue(network, "dev0", [ids[0]])
        await store.delete_session(network, "dev1")
        await store.dequeue(network, "dev2", [ids[2]])
        assert _queued_rows(store) == (1, 1)  # dev3 still holds it
        await store.dequeue(network, "dev3", [ids[3]])
        assert _queued_rows(store) == (0, 0)


async def test_migration_2_keeps_queued_messages_of_a_version_1_database(tmp_path, network):
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.isolation_level = None
    for number, sql in MIGRATIONS[:1]:
        db.executescript(sql)
        db.execute(f"PRAGMA user_version={number}")
    db.execute("INSERT INTO networks (id, uuid, created_us) VALUES (1, ?, 0)", (str(network),))
    db.execute("INSERT INTO sessions VALUES (1, 'dev')")
    db.execute("INSERT INTO queued VALUES (7, 1, 'dev', 't/a', x'0102', 1, 0)")
    db.execute("INSERT INTO queued VALUES (9, 1, 'dev', 't/b', x'03', 2, 1)")
    db.close()
    async with open_sqlite_store(tmp_path) as store:
        (session,) = await store.load_sessions()
        assert session.queued == (QueuedMessage(7, "t/a", b"\x01\x02", 1, False),
                                  QueuedMessage(9, "t/b", b"\x03", 2, True))
        assert (session.queued_count, session.queued_bytes, session.queued_upto) == (2, 3, 9)
        await store.dequeue(network, "dev", [7, 9])
    assert _counts(tmp_path) == (0, 0)


async def test_mqtt5_properties_and_expiry_survive_a_restart_on_both_stores(open_store, network):
    from gateway.storage import (
        Enqueued,
        EnqueuedMany,
        QueuedMessage,
        RetainedChange,
        RetainedMessage,
        SessionSaved,
    )

    expires = T0 + timedelta(hours=1)
    props = b"\x01\x01\x23\x00\x05"  # wire bytes, stored as they came
    async with open_store() as store:
        ids = await store.wait_committed(await store.submit_session_changes([
            SessionSaved(network, "dev", (("cmd/#", 1 + 4 * 256),), expiry_interval=3600),
            SessionSaved(network, "other", (("cmd/#", 1),)),
            RetainedChange(network, "state", b"on", 1, props, expires),
            Enqueued(network, "dev", "cmd/a", b"1", 1, False, props, expires),
            EnqueuedMany(network, "cmd/b", b"2", True, (("dev", 2), ("other", 1))),
        ], T0))
    async with open_store() as store:
        assert await store.retained(network) == [RetainedMessage("state", b"on", 1, props,
                                                                 expires)]
        dev, other = await store.load_sessions(network)
        assert (dev.client_id, dev.expiry_interval, other.expiry_interval) == ("dev", 3600, None)
        assert dev.subscriptions == (("cmd/#", 1 + 4 * 256),)
        assert dev.queued == (QueuedMessage(ids[0], "cmd/a", b"1", 1, False, props, expires),
                              QueuedMessage(ids[1], "cmd/b", b"2", 2, True))
        assert [m.id for m in other.queued] == [ids[2]]
