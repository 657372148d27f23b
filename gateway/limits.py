"""Limits that keep one device, one network or a flood of sockets from harming the others.

`TokenBucket` is pure (time is passed in): `debit(n, now)` takes n tokens and returns how long
the caller must wait before going on. The connection loop waits that long before reading
again, so an over-rate publisher is slowed down by TCP backpressure, never dropped.
`ConnectionLimits` counts live connections in total and per network, and rate-limits accepts
per source address first (`SourceRates`), then in total: one source's flood of connects
spends its own bucket, not the one every other device reconnects through.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .reasons import ThrottleLimit


class TokenBucket:
    """A token bucket of `burst` tokens refilled at `rate` tokens per second."""

    __slots__ = ("rate", "burst", "_tokens", "_stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def try_take(self, n: float, now: float) -> bool:
        """Take n tokens if they are there; return whether it did."""
        self._refill(now)
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    def debit(self, n: float, now: float) -> float:
        """Take n tokens, going into debt if needed; return seconds until the debt is paid."""
        self._refill(now)
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class SourceRates:
    """One token bucket per source address (`source_key`), for at most `max_sources` sources:
    past that the least recently seen source's bucket is forgotten (it starts full again),
    so memory stays bounded whatever the number of addresses a flood comes from."""

    __slots__ = ("rate", "burst", "max_sources", "_buckets")

    def __init__(self, rate: float, burst: float, max_sources: int = 4_096) -> None:
        self.rate, self.burst, self.max_sources = rate, burst, max_sources
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def try_take(self, source: str, now: float) -> bool:
        """Take one token from `source`'s bucket; return whether there was one."""
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= self.max_sources:
                self._buckets.popitem(last=False)
            bucket = self._buckets[source] = TokenBucket(self.rate, self.burst, now)
        else:
            self._buckets.move_to_end(source)
        return bucket.try_take(1, now)


class AcceptRates:
    """New connections per second, per source address (`source_key`) first, then in total:
    the HTTPS listener's guard against a handshake flood. Each TLS handshake costs the
    gateway about a millisecond of CPU, so without it one source could spend the core the
    devices' traffic needs; a refused connection is closed at accept, before any TLS."""

    __slots__ = ("per_source", "total", "names")

    def __init__(self, per_source: SourceRates, total: TokenBucket,
                 names: tuple[str, str]) -> None:
        self.per_source, self.total, self.names = per_source, total, names

    def refuse(self, source: str, now: float) -> str | None:
        """Take one accept for `source`; return the name of the limit that refuses it, or
        None. A source over its own rate spends nothing of the total."""
        if not self.per_source.try_take(source, now):
            return self.names[0]
        if not self.total.try_take(1, now):
            return self.names[1]
        return None


class NetworkRates:
    """A token bucket per network (`rate` per second, `burst`), e.g. readings per second.

    `debit(network, n, now)` takes n tokens from that network's bucket (going into debt) and
    returns how long the caller must stop before going on: the connections of one network
    share its budget, and each one that adds to the debt waits for it. Buckets live in an LRU
    of at most `max_networks` (a network pushed out starts again with a full burst), so
    memory is bounded whatever the number of networks; each call is O(1).
    """

    __slots__ = ("rate", "burst", "max_networks", "_buckets", "throttled")

    def __init__(self, rate: float, burst: float, *, max_networks: int = 65_536) -> None:
        if rate <= 0 or burst <= 0 or max_networks < 1:
            raise ValueError("rate, burst and max_networks must be positive")
        self.rate, self.burst, self.max_networks = float(rate), float(burst), max_networks
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.throttled = 0  # debits that returned a delay

    def __len__(self) -> int:
        return len(self._buckets)

    def debit(self, network: str, n: float, now: float) -> float:
        """Take n tokens from `network`'s bucket; return seconds until its debt is paid."""
        bucket = self._buckets.get(network)
        if bucket is None:
            bucket = self._buckets[network] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > self.max_networks:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(network)
        delay = bucket.debit(n, now)
        if delay > 0:
            self.throttled += 1
        return delay


@dataclass(slots=True)
class ConnectionLimits:
    """Live connection counters and the accept-rate buckets (per source, then in total)."""

    max_connections: int
    max_per_network: int
    rate: TokenBucket
    per_source: SourceRates | None = None
    total: int = 0
    per_network: Counter[str] = field(default_factory=Counter)
    refused: Counter[ThrottleLimit] = field(default_factory=Counter)

    def open_socket(self, now: float, source: str = "") -> ThrottleLimit | None:
        """Count a new TCP connection from `source` (a `source_key`); return why it must be
        refused, or None. A source over its own rate spends nothing of the total's."""
        if self.total >= self.max_connections:
            why = ThrottleLimit.MAX_CONNECTIONS
        elif self.per_source is not None and not self.per_source.try_take(source, now):
            why = ThrottleLimit.CONNECTION_RATE_PER_SOURCE
        elif not self.rate.try_take(1, now):
            why = ThrottleLimit.CONNECTION_RATE
        else:
            self.total += 1
            return None
        self.refused[why] += 1
        return why

    def close_socket(self) -> None:
        self.total -= 1

    def open_network(self, network: str, *, force: bool = False) -> ThrottleLimit | None:
        """Count a session of `network`; return why it must be refused, or None.

        `force` counts it even at the cap (a takeover: the old session is about to go).
        """
        if not force and self.per_network[network] >= self.max_per_network:
            self.refused[ThrottleLimit.MAX_CONNECTIONS_PER_NETWORK] += 1
            return ThrottleLimit.MAX_CONNECTIONS_PER_NETWORK
        self.per_network[network] += 1
        return None

    def close_network(self, network: str) -> None:
        self.per_network[network] -= 1
        if self.per_network[network] <= 0:
            del self.per_network[network]

    def statistics(self) -> dict[str, object]:
        return {
            "connections": self.total,
            "networks": len(self.per_network),
            "refused": dict(self.refused),
        }


def source_key(peer: str) -> str:
    """The "source address" a per-source cap counts: an IPv4 address, or an IPv6 /64.

    One IPv6 host usually holds a whole /64, so counting single IPv6 addresses would let
    it walk around the cap.
    """
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return peer
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address.ipv4_mapped or address) if address.version == 6 else str(address)


class PendingPool:
    """Connections not yet authenticated, capped per source address and in total.

    Its own pool, apart from `ConnectionLimits`, so unauthenticated sockets never take an
    authenticated connection's place. `admit(token, source)` always admits the newcomer and
    returns the tokens (with the limit that evicted them) the caller must drop to make room:
    the oldest pending connection of that source when the source is at its cap, else the
    oldest overall when the pool is full.
    A real handshake ends in milliseconds; a slowloris never does, so the oldest is the best
    guess at an attacker. `release(token)` forgets a token (handshake done, failed, dropped);
    releasing an evicted or unknown token is a no-op. Costs O(1) per call.
    """

    __slots__ = ("max_total", "max_per_source", "_order", "_by_source", "admitted",
                 "evicted_per_source", "evicted_total")

    def __init__(self, max_total: int, max_per_source: int) -> None:
        if max_total < 1 or max_per_source < 1:
            raise ValueError("pending caps must be at least 1")
        self.max_total = max_total
        self.max_per_source = max_per_source
        self._order: dict[object, str] = {}  # insertion-ordered: oldest first
        self._by_source: dict[str, dict[object, None]] = {}
        # Since start: tokens admitted, and evicted by each cap.
        self.admitted = self.evicted_per_source = self.evicted_total = 0

    def __len__(self) -> int:
        return len(self._order)

    def pending(self, source: str) -> int:
        return len(self._by_source.get(source, ()))

    def admit(self, token: object, source: str) -> list[tuple[object, str]]:
        """Add `token` from `source`; return (token, limit) for each one evicted to make room.

        The limit is "max_pending_per_source" or "max_pending" (the config option's name).
        """
        evicted: list[tuple[object, str]] = []
        mine = self._by_source.get(source)
        if mine is not None and len(mine) >= self.max_per_source:
            victim = next(iter(mine))
            self.release(victim)
            self.evicted_per_source += 1
            evicted.append((victim, "max_pending_per_source"))
        if len(self._order) >= self.max_total:
            victim = next(iter(self._order))
            self.release(victim)
            self.evicted_total += 1
            evicted.append((victim, "max_pending"))
        self._order[token] = source
        self._by_source.setdefault(source, {})[token] = None
        self.admitted += 1
        return evicted

    def release(self, token: object) -> None:
        source = self._order.pop(token, None)
        if source is None:
            return
        mine = self._by_source[source]
        del mine[token]
        if not mine:
            del self._by_source[source]

    def statistics(self) -> dict[str, object]:
        return {"pending": len(self._order), "sources": len(self._by_source),
                "admitted": self.admitted, "evicted_per_source": self.evicted_per_source,
                "evicted_total": self.evicted_total}


class ReadPacer:
    """The reading budgets of one device connection: bytes, PUBLISH packets and topic filters
    per connection (its own buckets), and what its reports owe its network's shared readings
    rate (`owe`). `delay` says how long to stop reading after a read; reading again only
    then is the backpressure TCP passes on to the device, so nothing is dropped."""

    __slots__ = ("octets", "publishes", "filters", "resumed_at", "_owed", "_logged")

    LOG_INTERVAL = 60.0
    """Seconds between two `readings_throttled` lines of one connection."""

    def __init__(self, config: Any, now: float) -> None:
        self.octets = TokenBucket(config.byte_rate, config.byte_burst, now)
        self.publishes = TokenBucket(config.publish_rate, config.publish_burst, now)
        self.filters = TokenBucket(config.filter_rate, config.filter_burst, now)
        self.resumed_at = 0.0  # when the reader last resumed after a pause
        self._owed = 0.0
        self._logged = -math.inf

    def read_deadline(self, last_packet_at: float | None, keepalive: int,
                      factor: float) -> float:
        """When the client's silence ends the session: `keepalive` x `factor` after its last
        complete packet, or after the reader's own last pause (not the client's doing);
        never without a keepalive (`last_packet_at` None or `keepalive` 0)."""
        if last_packet_at is None or not keepalive:
            return math.inf
        return max(last_packet_at, self.resumed_at) + factor * keepalive

    def log_readings(self, now: float) -> bool:
        """Whether a readings-rate pause at `now` gets a log line (one a LOG_INTERVAL)."""
        if now - self._logged < self.LOG_INTERVAL:
            return False
        self._logged = now
        return True

    def owe(self, seconds: float) -> None:
        """Record a pause the network's readings rate asks of this connection."""
        self._owed = max(self._owed, seconds)

    def delay(self, size: int, published: int, named: int, now: float) -> tuple[float, float]:
        """Charge one read (`size` bytes, `published` PUBLISH packets, `named` topic filters);
        return (seconds to stop reading, the part of it the network's readings rate alone
        asks for, or 0.0 when the connection's own rates ask as much)."""
        own = max(self.octets.debit(size, now), self.publishes.debit(published, now),
                  self.filters.debit(named, now))
        owed, self._owed = self._owed, 0.0
        return max(own, owed), (owed if owed > own else 0.0)
