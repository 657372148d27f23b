"""Reports accepted and connections refused, per minute: the console's fleet figures.

Counted as they happen, never read back from the store, so what a figure costs does not
grow with the fleet's history:

- the fleet's counts, in a ring of `MINUTES` per-minute buckets (the last hour);
- each network's reports, in its current and previous minute only, for the networks active
  in the last two minutes. Entries older than that are dropped as new networks arrive (they count
  nothing any more); past `max_networks` active ones, the least recently active is dropped
  too, counted `activity_networks_dropped` (its figures read 0 until it is active again).

"Per minute" is the trailing minute, estimated as rate limiters do: the current minute's
count plus the previous minute's, weighted by the part of it still inside the last 60
seconds. It moves as soon as something is counted, with no need to wait for a minute to end.

A refused connection is one the gateway refused at admission: a failed TLS handshake, a
certificate that opens no jail (revoked, expired, barred...), or a connection over a rate or
count limit at accept. It is counted for the fleet only: most refusals happen inside the TLS
handshake (OpenSSL refuses a revoked, expired or unknown certificate there), before the peer
has proven any network, and a network named by an unproven certificate is anyone's to claim.
"""

from __future__ import annotations

import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from uuid import UUID

from .metrics import Count
from .reasons import DisconnectReason

MINUTES = 60


@dataclass(frozen=True, slots=True)
class Rates:
    reports: float  # per minute
    refused: float = 0.0

    def json(self) -> dict[str, float]:
        return {"reports_per_minute": round(self.reports, 1),
                "refused_per_minute": round(self.refused, 1)}


class _Ring:
    """Per-minute counts of the last MINUTES minutes."""

    def __init__(self) -> None:
        self.counts = array("q", bytes(8 * MINUTES))
        self.minute = 0  # the minute of the newest bucket

    def _advance(self, minute: int) -> None:
        if minute > self.minute:
            for m in range(max(self.minute + 1, minute - MINUTES + 1), minute + 1):
                self.counts[m % MINUTES] = 0
            self.minute = minute

    def add(self, minute: int, n: int) -> None:
        self._advance(minute)
        if minute > self.minute - MINUTES:
            self.counts[minute % MINUTES] += n

    def series(self, minute: int) -> list[int]:
        """The last MINUTES minutes' counts, oldest first, ending with `minute`."""
        self._advance(minute)
        return [self.counts[m % MINUTES] for m in range(minute - MINUTES + 1, minute + 1)]


class Activity:
    """The counts; `clock` is monotonic seconds. Not thread-safe: call on the event loop."""

    def __init__(self, *, max_networks: int = 10_000,
                 clock: Callable[[], float] = time.monotonic,
                 dropped: Count | None = None) -> None:
        self.max_networks = max_networks
        self.clock = clock
        self.dropped = dropped if dropped is not None else Count(
            "activity_networks_dropped_total", "networks dropped from the activity figures")
        self._reports, self._refused = _Ring(), _Ring()
        # network -> [minute, reports that minute, reports the minute before]
        self._networks: OrderedDict[UUID, list[int]] = OrderedDict()

    def _now(self) -> tuple[int, float]:
        t = self.clock()
        return int(t // 60), (t % 60) / 60

    # -- counting -----------------------------------------------------------------------

    def reports(self, network: UUID | None, n: int) -> None:
        """`n` reports of `network` were accepted (queued for the store)."""
        if n <= 0:
            return
        minute, _ = self._now()
        self._reports.add(minute, n)
        if network is not None:
            self._network(network, minute)[1] += n

    def refused(self) -> None:
        """A connection was refused."""
        minute, _ = self._now()
        self._refused.add(minute, 1)

    def closed(self, reason: DisconnectReason | None) -> None:
        """A connection ended for `reason`: count it when it was refused at admission."""
        if reason is DisconnectReason.AUTH_ERROR:
            self.refused()

    def _network(self, network: UUID, minute: int) -> list[int]:
        entry = self._networks.get(network)
        if entry is None:
            entry = self._networks[network] = [minute, 0, 0]
            self._trim(minute)
        else:
            self._networks.move_to_end(network)
            entry[:] = _rolled(entry, minute)
        return entry

    def _trim(self, minute: int) -> None:
        nets = self._networks
        while nets:  # the least recently active first: stale ones count nothing any more
            oldest = next(iter(nets.values()))
            if oldest[0] >= minute - 1 and len(nets) <= self.max_networks:
                return
            if oldest[0] >= minute - 1:
                self.dropped.inc()
            nets.popitem(last=False)

    # -- reading ------------------------------------------------------------------------

    def fleet(self) -> Rates:
        """The whole fleet's figures."""
        minute, part = self._now()
        reports = self._reports.series(minute)
        refused = self._refused.series(minute)
        return Rates(_trailing(reports[-1], reports[-2], part),
                     _trailing(refused[-1], refused[-2], part))

    def history(self) -> dict[str, list[int]]:
        """The fleet's counts of each of the last MINUTES minutes, oldest first."""
        minute, _ = self._now()
        return {"reports": self._reports.series(minute),
                "refused": self._refused.series(minute)}

    def network(self, network: UUID) -> Rates:
        """A network's reports per minute (refused: 0, counted for the fleet only)."""
        entry = self._networks.get(network)
        if entry is None:
            return Rates(0.0)
        minute, part = self._now()
        _, reports, before = _rolled(entry, minute)
        return Rates(_trailing(reports, before, part))

    def networks(self, networks: Iterable[UUID]) -> Rates:
        """The sum of `networks`' reports per minute (an owner's fleet)."""
        return Rates(sum(self.network(n).reports for n in networks))

    def __len__(self) -> int:
        return len(self._networks)


def _rolled(entry: list[int], minute: int) -> list[int]:
    """A network's counts as of `minute` (the current become the previous, or both 0)."""
    if entry[0] == minute:
        return entry
    if entry[0] == minute - 1:
        return [minute, 0, entry[1]]
    return [minute, 0, 0]


def _trailing(now: int, before: int, part: float) -> float:
    return now + before * (1.0 - part)

