"""The console's per-minute figures (gateway.activity), on a clock the test moves."""

from __future__ import annotations

import uuid

from gateway.activity import MINUTES, Activity
from gateway.metrics import Count
from gateway.reasons import DisconnectReason


class Clock:
    def __init__(self, t: float = 6000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_reports_count_in_the_trailing_minute_then_fade():
    clock = Clock(6000.0)  # the start of a minute
    a = Activity(clock=clock)
    net = uuid.uuid4()
    a.reports(net, 30)
    a.reports(None, 10)  # a report with no network known still counts for the fleet
    assert a.fleet().reports == 40
    assert a.network(net).reports == 30
    clock.t += 90  # half of the next minute: half of the previous one is still in the window
    assert a.fleet().reports == 20
    assert a.network(net).reports == 15
    clock.t += 60  # two minutes on: nothing left
    assert a.fleet().reports == 0 and a.network(net).reports == 0


def test_the_fleet_keeps_an_hour_of_minutes():
    clock = Clock(0.0)
    a = Activity(clock=clock)
    for minute in range(MINUTES + 5):
        clock.t = minute * 60.0
        a.reports(None, minute)
    series = a.history()["reports"]
    assert len(series) == MINUTES
    assert series == list(range(5, MINUTES + 5))
    clock.t += 3 * 3600  # hours of silence: the ring is all zeros, not stale counts
    assert a.history()["reports"] == [0] * MINUTES


def test_refusals_count_for_the_fleet():
    clock = Clock()
    a = Activity(clock=clock)
    net = uuid.uuid4()
    a.refused()
    a.refused()
    a.reports(net, 3)
    assert a.fleet().json() == {"reports_per_minute": 3.0, "refused_per_minute": 2.0}
    assert a.networks([net, uuid.uuid4()]).json() == {"reports_per_minute": 3.0,
                                                      "refused_per_minute": 0.0}


def test_a_connection_refused_at_admission_counts_and_others_do_not():
    a = Activity(clock=Clock())
    a.closed(DisconnectReason.AUTH_ERROR)
    a.closed(DisconnectReason.CLIENT_DISCONNECT)
    a.closed(DisconnectReason.REVOKED)
    assert a.fleet().refused == 1


def test_networks_kept_are_bounded_and_stale_ones_go_first():
    clock = Clock()
    dropped = Count("activity_networks_dropped_total", "")
    a = Activity(max_networks=3, clock=clock, dropped=dropped)
    old = [uuid.uuid4() for _ in range(3)]
    for n in old:
        a.reports(n, 1)
    clock.t += 180  # they are stale now: new networks replace them without a loss counted
    new = [uuid.uuid4() for _ in range(3)]
    for n in new:
        a.reports(n, 1)
    assert len(a) == 3 and dropped.value == 0
    a.reports(uuid.uuid4(), 1)  # a fourth active network: the least recently active goes
    assert len(a) == 3 and dropped.value == 1
    assert a.network(new[0]).reports == 0 and a.network(new[1]).reports == 1
    assert a.fleet().reports == 4  # the fleet's figure loses nothing
