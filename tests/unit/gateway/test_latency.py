"""The latency histograms behind /metrics: cumulative buckets, weighted observations."""

from __future__ import annotations

from gateway.latency import Histogram


def test_buckets_are_cumulative_and_a_weight_counts_that_many_events():
    h = Histogram((0.01, 0.1))
    h.observe(0.005)
    h.observe(0.05, weight=3)
    h.observe(7.0)
    assert h.buckets() == [("0.01", 1), ("0.1", 4), ("+Inf", 5)]
    assert (h.count, round(h.sum, 6)) == (5, round(0.005 + 0.15 + 7.0, 6))


def test_a_value_on_a_bound_falls_in_that_bucket():
    h = Histogram((0.01, 0.1))
    h.observe(0.1)  # Prometheus buckets are "less than or equal"
    assert h.buckets() == [("0.01", 0), ("0.1", 1), ("+Inf", 1)]
