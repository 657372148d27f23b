"""`NetworkRates`: readings per second per network, a token bucket each, the clock passed in."""

from __future__ import annotations

import pytest

from gateway.limits import NetworkRates


def test_a_network_within_its_burst_is_not_delayed_and_past_it_owes_the_excess():
    rates = NetworkRates(rate=100, burst=200)
    assert rates.debit("a", 150, now=0.0) == 0.0
    assert rates.debit("a", 50, now=0.0) == 0.0  # the burst, exactly
    assert rates.debit("a", 100, now=0.0) == pytest.approx(1.0)  # 100 over, at 100/s
    assert rates.throttled == 1


def test_the_bucket_refills_with_the_injected_clock():
    rates = NetworkRates(rate=100, burst=200)
    assert rates.debit("a", 300, now=10.0) == pytest.approx(1.0)
    assert rates.debit("a", 0, now=10.5) == pytest.approx(0.5)  # half the debt paid
    assert rates.debit("a", 100, now=12.0) == 0.0  # paid, and 100 refilled
    assert rates.debit("a", 200, now=14.0) == 0.0  # 2 s later: full again
    assert rates.debit("a", 1, now=14.0) == pytest.approx(0.01)
    assert rates.debit("a", 201, now=100.0) == pytest.approx(0.01)  # capped at the burst


def test_networks_have_their_own_budgets_and_connections_of_one_share_it():
    rates = NetworkRates(rate=10, burst=10)
    assert rates.debit("a", 30, now=0.0) == pytest.approx(2.0)
    assert rates.debit("b", 10, now=0.0) == 0.0  # another network: untouched by a's debt
    # a second connection of network a reading now finds a's debt and waits for it too
    assert rates.debit("a", 10, now=0.0) == pytest.approx(3.0)


def test_memory_is_bounded_by_an_lru_of_networks():
    rates = NetworkRates(rate=1, burst=5, max_networks=3)
    for n in "abcd":
        rates.debit(n, 5, now=0.0)
    assert len(rates) == 3
    # "a" was pushed out: it starts again with a full burst; "d" is still in debt
    assert rates.debit("a", 5, now=0.0) == 0.0
    assert rates.debit("d", 1, now=0.0) == pytest.approx(1.0)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        NetworkRates(rate=0, burst=1)
