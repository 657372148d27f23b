"""The broker's deadline heap (gateway.deadlines): one deadline per (kind, key), replaced and
cancelled entries skipped, and a heap that stays proportional to what is pending."""

from __future__ import annotations

from gateway.deadlines import Deadlines


def test_due_returns_what_is_due_in_time_order_and_skips_replaced_and_cancelled():
    d: Deadlines[str] = Deadlines()
    d.set("expiry", "a", 10)
    d.set("will", "a", 5)
    d.set("expiry", "b", 7)
    d.set("expiry", "b", 20)  # replaced: its 7 no longer counts
    d.set("expiry", "c", 1)
    d.cancel("expiry", "c")
    assert d.next() == 5
    assert d.due(9) == [("will", "a")]
    assert d.due(15) == [("expiry", "a")]
    assert d.due(100) == [("expiry", "b")] and len(d) == 0 and d.next() is None


def test_a_key_set_again_and_again_keeps_the_heap_small():
    d: Deadlines[str] = Deadlines()
    for i in range(10_000):  # a device reconnecting all day
        d.set("expiry", "flappy", float(i))
        d.cancel("expiry", "flappy")
    d.set("expiry", "steady", 1.0)
    assert len(d._heap) <= 2 * len(d) + 65
    assert d.due(2.0) == [("expiry", "steady")]
