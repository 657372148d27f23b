"""Which account store a configuration names: PostgreSQL beside a PostgreSQL store, else the
SQLite file of the data folder; none without a data key (no console)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import AccountsBase


def open_accounts(config: Any, *, now_us: Callable[[], int]) -> AccountsBase | None:
    """The accounts of `config` (a GatewayConfig), open: in PostgreSQL at `config.store` when
    set, else in `<data>/accounts.db`; sealed under `config.data_key_path`. None when there is
    no key (no `data_key`, no data folder) or nowhere to keep them.

    Raises:
        DataKeyError: the key file is too open, malformed, or (PostgreSQL) not the cluster's.
        AccountsUnavailable: PostgreSQL cannot be reached.
    """
    key = config.data_key_path
    if key is None:
        return None
    if config.store is not None:
        from .pgstore import PostgresAccountStore  # psycopg only with a PostgreSQL store

        return PostgresAccountStore.open(config.store, key, now_us=now_us)
    if config.data is None:
        return None
    from .store import AccountStore

    return AccountStore.in_folder(config.data, key=key, now_us=now_us)
