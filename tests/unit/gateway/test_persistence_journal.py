"""gateway.persistence on a real SQLite store: the broker's journal, its ids, its failures,
and the broker rebuilt from the store."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime

import pytest

from gateway.broker_state import Message
from gateway.mqtt.packets import QoS
from gateway.persistence import QueueRef, load_broker_state
from gateway.reasons import DisconnectReason
from gateway.storage import DB_NAME, RetainedChange, StorageError, open_sqlite_store


class Outlet:
    """A live connection as the broker sees it (the test is about the store, not sockets)."""

    def wake(self) -> None:
        pass

    def close(self, reason: DisconnectReason, detail: str | None = None) -> None:
        pass


def _count(data, sql: str, *args) -> int:
    db = sqlite3.connect(data / DB_NAME)
    try:
        return db.execute(sql, args).fetchone()[0]
    finally:
        db.close()


async def _offline_session(broker, net: str, client_id: str, topic_filter: str):
    outlet = Outlet()
    key = (net, client_id)
    attached = broker.connect(key, False, outlet)
    broker.subscribe(attached.state, f"{net}/{topic_filter}", QoS.AT_LEAST_ONCE)
    broker.disconnect(key, outlet)
    return attached.state


async def test_a_copy_acknowledged_before_its_enqueue_committed_is_dequeued_afterwards(
        tmp_path):
    net = str(uuid.uuid4())
    async with open_sqlite_store(tmp_path) as store:
        broker, journal = await load_broker_state(store)
        state = await _offline_session(broker, net, "c", "t/#")
        broker.publish(Message(f"{net}/t/1", b"x", QoS.AT_LEAST_ONCE))
        queued = state.outbox[0]
        assert isinstance(queued.ref, QueueRef) and queued.ref.id is None
        broker.acknowledged(state, queued)  # delivered before the row id is known
        await journal.flush()
        assert queued.ref.id is not None
        assert journal.statistics()["pending"] == 1  # the dequeue, now that the id is known
        await journal.flush()
        assert _count(tmp_path, "SELECT count(*) FROM queued_refs") == 0
        assert _count(tmp_path, "SELECT count(*) FROM subscriptions") == 1


async def test_wait_durable_raises_when_the_commit_failed(tmp_path):
    async with open_sqlite_store(tmp_path) as store:
        broker, journal = await load_broker_state(store)
    # The store is closed now: the next flush cannot commit.
    broker.publish(Message(f"{uuid.uuid4()}/r", b"kept", QoS.AT_LEAST_ONCE, retain=True))
    mark = journal.mark()
    await journal.flush()
    with pytest.raises(StorageError):
        await journal.wait_durable(mark)
    assert journal.statistics()["failures"] == 1


async def test_a_clear_for_an_unknown_network_does_not_create_it(tmp_path):
    network = uuid.uuid4()
    async with open_sqlite_store(tmp_path) as store:
        ticket = await store.submit_session_changes(
            [RetainedChange(network, "gone", b"", 0)], datetime.now(UTC))
        assert await store.wait_committed(ticket) == []
    assert _count(tmp_path, "SELECT count(*) FROM networks WHERE uuid = ?", str(network)) == 0


async def test_the_broker_is_rebuilt_from_the_store_with_mounted_topics(tmp_path):
    network = uuid.uuid4()
    net = str(network)
    now = datetime.now(UTC)
    async with open_sqlite_store(tmp_path) as store:
        await store.save_session(network, "p", [("a/#", 1)], now)
        (row,) = await store.enqueue(network, "p", [("a/b", b"q", 1, False)], now)
        await store.set_retained(network, "s/1", b"r", 1, now)
        broker, journal = await load_broker_state(store, max_queued=5)
    state = broker.sessions.get((net, "p"))
    assert state is not None and not state.clean and state.max_queued == 5
    assert state.subscriptions == {f"{net}/a/#": QoS.AT_LEAST_ONCE}
    # Only the queue's size is read at start; its messages wait in the store.
    assert (list(state.outbox), state.stored, state.stored_upto, state.queued_bytes) == (
        [], 1, row, 1)
    assert [(m.topic, m.payload, m.retain) for m in broker.retained.matching(f"{net}/#")] == [
        (f"{net}/s/1", b"r", True)]
    # Routing works on the loaded subscription and nothing was journaled by loading it.
    assert journal.mark() == 0
    assert broker.publish(Message(f"{net}/a/c", b"new", QoS.AT_LEAST_ONCE)) == 1
    attached = broker.connect((net, "p"), False, Outlet())
    assert attached.session_present


async def test_mqtt5_state_goes_through_the_journal_and_comes_back_after_a_restart(tmp_path):
    from gateway.delivery import Grant
    from gateway.mqtt.properties import make_properties

    net = str(uuid.uuid4())
    wall = [1_000_000.0]
    props = make_properties(content_type="text/plain", response_topic=f"{net}/answers",
                            correlation_data=b"c", user_properties=(("k", "v"),))
    async with open_sqlite_store(tmp_path) as store:
        broker, journal = await load_broker_state(store, clock=lambda: wall[0])
        outlet = Outlet()
        key = (net, "v5")
        state = broker.connect(key, True, outlet, expiry=600).state
        broker.subscribe(state, f"{net}/t/#", QoS.AT_LEAST_ONCE,
                         Grant(QoS.AT_LEAST_ONCE, no_local=True, identifier=7))
        broker.subscribe(state, f"$share/g/{net}/jobs", QoS.AT_LEAST_ONCE)
        broker.disconnect(key, outlet)
        broker.publish(Message(f"{net}/t/a", b"q", QoS.AT_LEAST_ONCE, props=props,
                               expires_at=wall[0] + 60))
        broker.publish(Message(f"{net}/r", b"kept", QoS.AT_LEAST_ONCE, True, props=props,
                               expires_at=wall[0] + 90))
        await journal.flush()
    async with open_sqlite_store(tmp_path) as store:
        broker, journal = await load_broker_state(store, clock=lambda: wall[0])
        state = broker.sessions.get(key)
        assert (state.expiry, state.clean) == (600, False)
        assert state.options == {f"{net}/t/#": Grant(QoS.AT_LEAST_ONCE, no_local=True,
                                                     identifier=7)}
        assert set(state.subscriptions) == {f"{net}/t/#", f"$share/g/{net}/jobs"}
        await broker.sessions.restore(state)
        (queued,) = state.outbox
        assert (queued.props, queued.expires_at) == (props, wall[0] + 60)
        (kept,) = broker.retained.matching(f"{net}/r")
        assert (kept.props, kept.expires_at) == (props, wall[0] + 90)
        # The shared group is back: a job goes to its one member.
        assert broker.publish(Message(f"{net}/jobs", b"j", QoS.AT_LEAST_ONCE)) == 1
        # Its expiry counts from the restart: dropped once it passed.
        dropped, _ = broker.tick(wall[0] + 600)
        assert dropped == [key]
