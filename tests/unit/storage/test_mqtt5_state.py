"""What MQTT 5 keeps across a restart: message properties and expiry on queued and retained
messages, a session's expiry interval, subscription options and identifiers in the grant."""

from __future__ import annotations

from datetime import timedelta

from storehelpers import T0

from gateway.storage import (
    Enqueued,
    EnqueuedMany,
    QueuedMessage,
    RetainedChange,
    RetainedMessage,
    SessionSaved,
    open_sqlite_store,
)

PROPS = b"\x05\x03\x00\x02ct"  # a PUBLISH property list: content type "ct"
LATER = T0 + timedelta(seconds=30)


async def test_mqtt5_fields_of_retained_queued_and_sessions_survive_a_restart(
        tmp_path, network):
    grant = 1 | 4 | 8 | (2 << 4) | (7 << 8)  # QoS 1, no local, RAP, handling 2, id 7
    async with open_sqlite_store(tmp_path) as store:
        ids = await store.wait_committed(await store.submit_session_changes([
            SessionSaved(network, "v5", (("cmd/#", grant), ("$share/g/a", 2)), 600),
            SessionSaved(network, "v311", (("cmd/#", 1),)),
            RetainedChange(network, "r/a", b"1", 1, PROPS, LATER),
            RetainedChange(network, "r/b", b"2", 0),
            Enqueued(network, "v5", "cmd/x", b"q", 1, False, PROPS, LATER),
            EnqueuedMany(network, "cmd/y", b"m", True, (("v5", 2), ("v311", 1)), b"", LATER),
        ], T0))
    async with open_sqlite_store(tmp_path) as store:
        by_client = {s.client_id: s for s in await store.load_sessions()}
        assert by_client["v5"].expiry_interval == 600
        assert by_client["v5"].subscriptions == (("$share/g/a", 2), ("cmd/#", grant))
        assert by_client["v311"].expiry_interval is None
        assert by_client["v311"].subscriptions == (("cmd/#", 1),)
        assert by_client["v5"].queued == (
            QueuedMessage(ids[0], "cmd/x", b"q", 1, False, PROPS, LATER),
            QueuedMessage(ids[1], "cmd/y", b"m", 2, True, b"", LATER))
        assert by_client["v311"].queued == (
            QueuedMessage(ids[2], "cmd/y", b"m", 1, True, b"", LATER),)
        assert await store.retained(network) == [
            RetainedMessage("r/a", b"1", 1, PROPS, LATER), RetainedMessage("r/b", b"2", 0)]


async def test_a_retained_message_replaced_by_a_3_1_1_one_loses_its_mqtt5_fields(
        store, network):
    await store.wait_committed(await store.submit_session_changes(
        [RetainedChange(network, "r", b"1", 1, PROPS, LATER)], T0))
    await store.wait_committed(await store.submit_session_changes(
        [RetainedChange(network, "r", b"2", 1)], T0))
    assert await store.retained(network) == [RetainedMessage("r", b"2", 1)]


async def test_a_session_saved_again_takes_its_new_expiry_interval(store, network):
    for expiry in (60, None):
        await store.wait_committed(await store.submit_session_changes(
            [SessionSaved(network, "dev", (), expiry)], T0))
        (session,) = await store.load_sessions(network)
        assert session.expiry_interval == expiry
