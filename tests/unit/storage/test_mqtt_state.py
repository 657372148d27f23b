"""Retained messages, persistent sessions and queued QoS 1/2 messages survive a restart."""

from __future__ import annotations

import uuid

from storehelpers import T0

from gateway.storage import QueuedMessage, RetainedMessage, open_sqlite_store


async def test_retained_messages_are_set_replaced_cleared_and_kept_across_restart(
        tmp_path, network):
    async with open_sqlite_store(tmp_path) as store:
        await store.set_retained(network, "a/b", b"1", 1, T0)
        await store.set_retained(network, "a/b", b"2", 0, T0)
        await store.set_retained(network, "c", b"x", 1, T0)
        await store.set_retained(network, "gone", b"y", 1, T0)
        await store.set_retained(network, "gone", b"", 0, T0)  # empty payload clears
        await store.set_retained(uuid.uuid4(), "a/b", b"other", 1, T0)
    async with open_sqlite_store(tmp_path) as store:
        assert await store.retained(network) == [RetainedMessage("a/b", b"2", 0),
                                                 RetainedMessage("c", b"x", 1)]


async def test_sessions_keep_subscriptions_and_queued_messages_across_restart(
        tmp_path, network):
    async with open_sqlite_store(tmp_path) as store:
        await store.save_session(network, "dev1", [("report/#", 1), ("control/+/+", 2)], T0)
        await store.save_session(network, "dev1", [("control/#", 1)], T0)  # replaces
        ids = await store.enqueue(network, "dev1", [("control/a/b", b"1", 1, True),
                                                    ("chat", b"\x00\xff", 2, False),
                                                    ("x", b"3", 1, False)], T0)
        await store.dequeue(network, "dev1", ids[2:])  # delivered and acknowledged
        await store.save_session(network, "dev2", [], T0)
        await store.delete_session(network, "dev2")
    async with open_sqlite_store(tmp_path) as store:
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
