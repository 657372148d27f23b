"""The reads that matter: one value's history over a time range, latest states, status."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from storehelpers import T0, model_decl

from gateway.ingest import ReportRow, StateKind


async def settled(store, network) -> None:
    """Status writes are queued, not waited for: an (empty) write of the same network,
    committed, means every earlier write of that network is (one queue per network)."""
    await store.wait_committed(await store.submit_reports((), network))


def at(minutes: float):
    return T0 + timedelta(minutes=minutes)


async def test_history_is_ordered_by_device_time_filtered_by_range_and_paged(store, network):
    tree = await store.declare_model(network, model_decl(), T0)
    temp = tree.devices[0].values[0].uuid
    # arrives out of order (a buffered batch after live readings)
    await store.append_reports([ReportRow(temp, str(m), at(m), at(20)) for m in (10, 11, 12)])
    await store.append_reports([ReportRow(temp, str(m), at(m), at(21)) for m in (1, 2, 3, 4)])
    everything = await store.history(temp)
    assert [r.data for r in everything] == ["1", "2", "3", "4", "10", "11", "12"]
    assert everything[0].timestamp == at(1) and everything[0].received == at(21)
    assert everything[0].kind is StateKind.REPORT and everything[0].value == temp
    window = await store.history(temp, since=at(2), until=at(11))
    assert [r.data for r in window] == ["2", "3", "4", "10"]
    newest = await store.history(temp, newest_first=True, limit=2)
    assert [r.data for r in newest] == ["12", "11"]
    pages, after = [], None
    while page := await store.history(temp, limit=3, after=after):
        pages.append([r.data for r in page])
        after = page[-1]
    assert pages == [["1", "2", "3"], ["4", "10", "11"], ["12"]]
    back = await store.history(temp, newest_first=True, limit=3, after=newest[-1])
    assert [r.data for r in back] == ["10", "4", "3"]


async def test_equal_timestamps_page_without_loss_or_repeat(store, network):
    tree = await store.declare_model(network, model_decl(), T0)
    temp = tree.devices[0].values[0].uuid
    await store.append_reports([ReportRow(temp, str(i), T0, T0) for i in range(7)])
    seen, after = [], None
    while page := await store.history(temp, limit=2, after=after):
        seen += [r.data for r in page]
        after = page[-1]
    assert seen == [str(i) for i in range(7)]


async def test_latest_state_of_every_value_is_the_newest_by_device_time(store, network):
    tree = await store.declare_model(network, model_decl(), T0)
    temp, target, _ = tree.devices[0].values
    door = tree.devices[1].values[0]
    await store.append_reports([ReportRow(temp.uuid, "20", at(5), at(5)),
                                ReportRow(temp.uuid, "19", at(1), at(6)),  # late, older
                                ReportRow(door.uuid, "open", at(2), at(2))])
    control = await store.append_control(target.uuid, "21", at(7))
    latest = await store.latest_states(network)
    assert latest[temp.state(StateKind.REPORT).uuid].data == "20"
    assert latest[door.state(StateKind.REPORT).uuid].data == "open"
    assert latest[target.state(StateKind.CONTROL).uuid] == control
    assert target.state(StateKind.REPORT).uuid not in latest  # nothing reported yet
    assert await store.history(target.uuid, kind=StateKind.CONTROL) == [control]


async def test_find_value_says_where_a_value_lives(store, network):
    tree = await store.declare_model(network, model_decl(), T0)
    target = tree.devices[0].values[1]
    where = await store.find_value(target.uuid)
    assert (where.network, where.device, where.device_name) == (
        network, tree.devices[0].uuid, "thermo")
    assert where.value == target
    assert await store.find_value(uuid.uuid4()) is None


async def test_find_device_gives_its_network_and_node(store, network):
    tree = await store.declare_model(network, model_decl(), T0)
    door = tree.devices[1]
    assert await store.find_device(door.uuid) == (network, door)
    assert await store.find_device(uuid.uuid4()) is None
    assert await store.find_device(tree.devices[0].values[0].uuid) is None  # a value's UUID


async def test_connection_status_tracks_connects_disconnects_and_history(store, network):
    await store.connected(network, "a", "0A1B", at(0))
    await store.connected(network, "b", "0A1B", at(1))
    await store.seen(network, at(2))
    await store.disconnected(network, "a", "CONNECTION_LOST", at(3))
    await settled(store, network)
    status = await store.connection_status(network)
    assert status.online and status.connections == 1
    assert status.connected_since == at(0) and status.last_seen == at(3)
    assert status.cert_serial == "0A1B"
    await store.disconnected(network, "b", "KEEP_ALIVE_TIMEOUT", at(4))
    await settled(store, network)
    status = await store.connection_status(network)
    assert not status.online and status.connected_since is None
    assert status.disconnect_reason == "KEEP_ALIVE_TIMEOUT" and status.last_seen == at(4)
    events = await store.connection_history(network)
    assert [(e.event, e.client_id, e.at) for e in events] == [
        ("disconnect", "b", at(4)), ("disconnect", "a", at(3)),
        ("connect", "b", at(1)), ("connect", "a", at(0))]
    assert await store.connection_status(uuid.uuid4()) is None


async def test_a_restart_marks_networks_that_were_online_offline(open_store, network):
    async with open_store() as store:
        await store.connected(network, "a", "01", datetime.now(UTC) - timedelta(hours=1))
    async with open_store() as store:
        status = await store.connection_status(network)
        assert not status.online and status.disconnect_reason == "GATEWAY_RESTART"
        assert (await store.connection_history(network))[0].reason == "GATEWAY_RESTART"


async def test_networks_are_listed_in_pages(store):
    nets = sorted(uuid.uuid4() for _ in range(5))
    for n in nets:
        await store.connected(n, "c", None, T0)
        await settled(store, n)
    first = await store.list_networks(limit=3)
    rest = await store.list_networks(limit=3, after=first[-1].network)
    assert [s.network for s in first + rest] == nets
    assert all(s.online for s in first + rest)
