"""The console as `fleet-gateway serve` runs it: the accounts its configuration names (the
data folder's file, or the PostgreSQL store's tables: `gateway.accounts.open_accounts`), the
owner-code sink fed by MQTT admission, and the Console factory `serve_http` takes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from ..accounts.errors import AccountsUnavailable, DataKeyError
from ..accounts.factory import open_accounts
from ..accounts.sink import OwnerCodeSink
from ..errors import ConfigError
from ..storage.errors import StoreUnavailable
from .app import Console


@asynccontextmanager
async def console_for(gateway: Any) -> AsyncIterator[Callable[[Any], Console] | None]:
    """Yield the Console factory of `gateway.config` (None without a data key: no console).

    Raises:
        ConfigError: the data key file is unusable (`DataKeyError`'s reason): exit 3.
        StoreUnavailable: the accounts' PostgreSQL cannot be reached: exit 9.
    """
    try:
        accounts = await trio.to_thread.run_sync(
            lambda: open_accounts(gateway.config, now_us=lambda: time.time_ns() // 1000))
    except DataKeyError as exc:
        raise ConfigError(f"console: {exc}") from None
    except AccountsUnavailable as exc:
        raise StoreUnavailable(str(exc)) from None
    if accounts is None:
        yield None
        return
    config = gateway.config
    if config.store is not None and config.data is not None and (
            config.data / "accounts.db").exists():
        # Before the accounts moved into PostgreSQL they were this file: said once, at start.
        gateway.log.emit("console_accounts_file_unused", file=str(config.data / "accounts.db"),
                         detail="the console's accounts are in PostgreSQL; copy this file's "
                                "with `fleet-gateway account import` (once, before sign-ups)")
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
