"""Latency histograms for /metrics: fixed buckets, one O(log buckets) step per observation.

`prometheus_client`'s own `Histogram` takes a lock and one observation per call; the gateway
observes per batch instead (a commit, a read's acknowledgements, with their count as the
weight), so the hot path pays one subtraction and one bisect per batch, never per report.
The exposition is still the library's (gateway.http.metrics builds a `HistogramMetricFamily`
from `buckets()`). The gateway's named histograms are `gateway.metrics.Timing`s.
"""

from __future__ import annotations

from bisect import bisect_left

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0)
"""Upper bounds in seconds: from a commit on a fast disk to a TLS handshake on a busy core."""


class Histogram:
    """Counts of durations per bucket (`le` upper bounds, +Inf last), their sum and count."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...] = BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float, weight: int = 1) -> None:
        """Record `weight` events that each took `seconds`."""
        self.counts[bisect_left(self.bounds, seconds)] += weight
        self.sum += seconds * weight
        self.count += weight

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts per upper bound, as Prometheus wants them (`+Inf` last)."""
        cumulative, out = 0, []
        for bound, n in zip(self.bounds, self.counts, strict=False):
            cumulative += n
            out.append((repr(bound), cumulative))
        out.append(("+Inf", self.count))
        return out
