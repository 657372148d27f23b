"""The console as `fleet-gateway serve` runs it: the accounts file of the data folder, the
owner-code sink fed by MQTT admission, and the Console factory `serve_http` takes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from ..accounts import AccountStore
from ..accounts.sink import OwnerCodeSink
from .app import Console


@asynccontextmanager
async def console_for(gateway: Any, data: Path | None
                      ) -> AsyncIterator[Callable[[Any], Console] | None]:
    """Yield the Console factory (None without a data folder: no console)."""
    if data is None:
        yield None
        return
    accounts = await trio.to_thread.run_sync(
        lambda: AccountStore.in_folder(data, now_us=lambda: time.time_ns() // 1000))
    limiter = trio.CapacityLimiter(1)
    sink = OwnerCodeSink(accounts, gateway.metrics.console, limiter)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(sink.run)
            gateway.owner_codes = sink
            try:
                yield lambda api: Console(
                    api, accounts, limiter=limiter, config=gateway.config,
                    metrics=gateway.metrics.console, activity=gateway.activity,
                    signer=gateway.provisioning.client)
            finally:
                gateway.owner_codes = None
                nursery.cancel_scope.cancel()
    finally:
        accounts.close()
