"""Deadlines by key, as a heap: what the broker must do later (MQTT 5 session expiry,
delayed wills), without I/O.

Each (kind, key) has at most one deadline; setting it again replaces it and cancelling it is
a dict removal. The heap keeps the replaced and cancelled entries until they surface (each is
skipped then); when they outnumber the live ones the heap is rebuilt from the live ones, so
its size stays proportional to what is pending, however often a device reconnects. `due(now)`
costs the entries due (log n each), never the deadlines that exist.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["Deadlines"]

K = TypeVar("K", bound=Hashable)


class Deadlines(Generic[K]):
    """At most one deadline (wall clock seconds) per (kind, key)."""

    __slots__ = ("_heap", "_at", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, K]] = []
        self._at: dict[tuple[str, K], float] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._at)

    def set(self, kind: str, key: K, at: float) -> None:
        self._at[kind, key] = at
        self._push(at, kind, key)
        if len(self._heap) > 2 * len(self._at) + 64:
            self._heap = []
            for (k, key_), when in self._at.items():
                self._push(when, k, key_)

    def cancel(self, kind: str, key: K) -> None:
        self._at.pop((kind, key), None)

    def get(self, kind: str, key: K) -> float | None:
        return self._at.get((kind, key))

    def next(self) -> float | None:
        """The earliest pending deadline (stale entries at the top are dropped first)."""
        heap = self._heap
        while heap and self._at.get((heap[0][2], heap[0][3])) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def due(self, now: float) -> list[tuple[str, K]]:
        """Remove and return, in time order, the (kind, key) pairs due by `now`."""
        out: list[tuple[str, K]] = []
        heap, at = self._heap, self._at
        while heap and heap[0][0] <= now:
            when, _, kind, key = heapq.heappop(heap)
            if at.get((kind, key)) == when:
                del at[kind, key]
                out.append((kind, key))
        return out

    def _push(self, at: float, kind: str, key: K) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, kind, key))
