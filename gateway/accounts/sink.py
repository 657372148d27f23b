"""Owner-code hashes from admitted devices into the accounts store, off the event loop.

`offer` is called on the trio thread at each admission and only puts the hash in a bounded
pending map; `run` drains it in batches in a worker thread (one transaction per batch).
Networks recorded during this run are remembered (bounded) so a reconnect costs a set lookup.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import trio

from ..metrics import ConsoleMetrics

MAX_PENDING = 10_000     # past it an offer is dropped (counted); the device's next connect retries
MAX_REMEMBERED = 100_000  # networks known recorded; the oldest forgotten first


class OwnerCodeSink:
    def __init__(self, store: Any, metrics: ConsoleMetrics | None = None,
                 limiter: trio.CapacityLimiter | None = None) -> None:
        self.store = store
        # One thread at a time on the accounts file: shared with the console's calls.
        self.limiter = limiter if limiter is not None else trio.CapacityLimiter(1)
        self.metrics = metrics if metrics is not None else ConsoleMetrics()
        self._pending: dict[str, bytes] = {}
        self._recorded: OrderedDict[str, None] = OrderedDict()
        self._wake = trio.Event()
        self._lock = trio.Lock()  # flush() returns only once what was pending is written

    def offer(self, network: str, digest: bytes) -> None:
        if network in self._recorded or network in self._pending:
            return
        if len(self._pending) >= MAX_PENDING:
            self.metrics.owner_codes_dropped.inc()
            return
        self._pending[network] = digest
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            await self._flush()

    async def forget(self, network: str) -> None:
        """Erasure: delete `network`'s owner-code row (its hash, who claimed it), and drop
        an offer of it still pending, so no later flush writes the row back."""
        async with self._lock:
            self._pending.pop(network, None)
            self._recorded.pop(network, None)
            await trio.to_thread.run_sync(self.store.forget_network, network,
                                          limiter=self.limiter)

    async def _flush(self) -> None:
        batch, self._pending = self._pending, {}
        if not batch:
            return
        await trio.to_thread.run_sync(self.store.record_owner_codes, batch,
                                   limiter=self.limiter)
        self.metrics.owner_codes_recorded.inc(len(batch))
        for network in batch:
            self._recorded[network] = None
            if len(self._recorded) > MAX_REMEMBERED:
                self._recorded.popitem(last=False)
