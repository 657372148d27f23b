"""HandshakeSlots: a bounded number of TLS handshakes at once, the rest in arrival order,
each slot a lease that a stalled handshake cannot keep."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from gateway.admission import HandshakeSlots


async def _holder(slots: HandshakeSlots, name: str, order: list[str],
                  done: trio.Event | None = None) -> None:
    await slots.acquire()
    order.append(name)
    if done is not None:
        await done.wait()
        slots.release()


async def test_past_the_limit_handshakes_wait_and_go_in_arrival_order():
    slots = HandshakeSlots(2, lease=60)
    order: list[str] = []
    release = {name: trio.Event() for name in "abcdef"}
    async with trio.open_nursery() as nursery:
        for name in "abcdef":
            nursery.start_soon(_holder, slots, name, order, release[name])
            await trio.testing.wait_all_tasks_blocked()
        assert order == ["a", "b"] and len(slots) == 2 and slots.waiting == 4
        release["b"].set()
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["a", "b", "c"]
        release["a"].set()
        release["c"].set()
        await trio.testing.wait_all_tasks_blocked()
        # Two slots freed at once go to the next two in line (trio then runs the two woken
        # tasks in either order); the last one still waits.
        assert order[:3] == ["a", "b", "c"] and set(order[3:]) == {"d", "e"}
        assert slots.waiting == 1
        for event in release.values():
            event.set()
    assert order[5] == "f" and sorted(order) == list("abcdef")
    assert len(slots) == 0 and slots.statistics()["waited"] == 4


async def test_a_newcomer_never_overtakes_the_line():
    slots = HandshakeSlots(1, lease=60)
    order: list[str] = []
    first, second = trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_holder, slots, "first", order, first)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(_holder, slots, "queued", order, second)
        await trio.testing.wait_all_tasks_blocked()
        first.set()  # frees the slot: it goes to the queued one, already leased...
        nursery.start_soon(_holder, slots, "newcomer", order, second)
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["first", "queued"]  # ...so the newcomer waits
        second.set()
    assert order == ["first", "queued", "newcomer"]


async def test_a_stalled_handshake_holds_its_slot_for_one_lease_only(autojump_clock):
    slots = HandshakeSlots(1, lease=1.0)
    order: list[str] = []
    never = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_holder, slots, "stalled", order, never)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(_holder, slots, "waiting", order)
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["stalled"]
        await trio.sleep(1.5)  # the lease ends; the next acquire or release reaps it
        nursery.start_soon(_holder, slots, "newcomer", order)
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["stalled", "waiting"]  # the line goes first, the newcomer queues
        assert slots.statistics()["leases_expired"] == 1
        await trio.sleep(1.5)
        slots.release()  # a release (this task holds nothing) reaps as well
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["stalled", "waiting", "newcomer"]
        nursery.cancel_scope.cancel()


async def test_a_waiter_cancelled_in_line_takes_no_slot():
    slots = HandshakeSlots(1, lease=60)
    order: list[str] = []
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_holder, slots, "holder", order, done)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(0.01) as scope:  # an evicted pending connection
            await slots.acquire()
        assert scope.cancelled_caught and slots.waiting == 0
        done.set()
    assert len(slots) == 0


def test_limits_are_checked():
    with pytest.raises(ValueError):
        HandshakeSlots(0)
    with pytest.raises(ValueError):
        HandshakeSlots(1, lease=0)
