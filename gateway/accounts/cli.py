"""`fleet-gateway account add-operator EMAIL`: the first operator, before any console login;
`fleet-gateway account rotate-key`: every account under a fresh data key;
`fleet-gateway account import --data DIR --store URL`: `<data>/accounts.db` into PostgreSQL.

The accounts are those `serve` would use (`open_accounts`): `<data>/accounts.db`, or with
`--store` (or `$FLEETGATE_STORE`) the PostgreSQL store's, under `--data-key` (default
`<data>/data.key`).

Exit codes follow gateway.cli: 0 done, 3 configuration (no data folder, no data key, no
accounts file to import), 6 account refused (exists, bad email or password, unusable key
file, accounts in PostgreSQL already), 8 malformed store URL, 9 PostgreSQL cannot be reached.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import os
import sys
import time

from ..config import GatewayConfig, check_store, load_config
from ..errors import ConfigError
from .errors import AccountError, AccountsUnavailable
from .factory import open_accounts

EXIT_ACCOUNT = 6
EXIT_STORE_URL = 8  # gateway.cli.ExitCode.STORE_URL
EXIT_UNREACHABLE = 9  # gateway.cli.ExitCode.STORE_UNAVAILABLE


def account_verb(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
    except ConfigError as exc:
        from ..storage.errors import BadStoreURL

        print(f"fleet-gateway: error: {exc}", file=sys.stderr)
        return EXIT_STORE_URL if isinstance(exc, BadStoreURL) else 3
    if args.action == "add-operator" and not args.email:
        print("fleet-gateway: error: add-operator needs an EMAIL", file=sys.stderr)
        return 2
    if args.action == "import":
        return _import(config)
    try:
        if args.action == "add-operator":
            password = _password(args)
        store = open_accounts(config, now_us=lambda: time.time_ns() // 1000)
        assert store is not None  # _config checked there is a key and a place
        try:
            if args.action == "rotate-key":
                key_id = store.rotate_key()
            else:
                account = store.add(args.email, password, "operator")
        finally:
            store.close()
    except AccountsUnavailable as exc:
        print(f"fleet-gateway: error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except (AccountError, OSError) as exc:
        print(f"fleet-gateway: error: {exc}", file=sys.stderr)
        return EXIT_ACCOUNT
    if args.action == "rotate-key":
        print(f"every account re-encrypted under data key {key_id}; the old key is gone "
              f"from {config.data_key_path}" + (
                  "; copy this file to every node before starting them"
                  if config.store is not None else ""))
        _record(config, "account.rotate-key", str(key_id))
        return 0
    print(f"operator account {account.id} created in {_where(config)}")
    _record(config, "account.add-operator", f"operator:{account.id}")
    return 0


def _import(config: GatewayConfig) -> int:
    from .datakey import DataKey
    from .transfer import check_key, import_file

    if config.store is None or config.data is None:
        print("fleet-gateway: error: import needs --data DIR (the accounts file) and --store "
              "URL (where it goes)", file=sys.stderr)
        return 3
    source = config.data / "accounts.db"
    if not source.is_file():
        print(f"fleet-gateway: error: no accounts file at {source}", file=sys.stderr)
        return 3
    try:
        key = config.data_key_path
        assert key is not None
        check_key(source, DataKey.open(key, create=False))  # before the database records it
        store = open_accounts(config, now_us=lambda: time.time_ns() // 1000)
        assert store is not None
        try:
            copied = import_file(source, store)  # type: ignore[arg-type]
        finally:
            store.close()
    except AccountsUnavailable as exc:
        print(f"fleet-gateway: error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except (AccountError, OSError) as exc:
        print(f"fleet-gateway: error: {exc}", file=sys.stderr)
        return EXIT_ACCOUNT
    print(f"{copied} account(s) copied from {source} into {_where(config)}; once the console "
          f"works, delete {source} (it holds them too)")
    _record(config, "account.import", str(copied))
    return 0


def _config(args: argparse.Namespace) -> GatewayConfig:
    config = load_config(args.config, {"data": args.data, "store": args.store,
                                       "data_key": args.data_key})
    if config.store is None and os.environ.get("FLEETGATE_STORE"):
        config = dataclasses.replace(config, store=check_store(os.environ["FLEETGATE_STORE"]))
    if config.data is None and config.store is None:
        raise ConfigError("no data folder: pass --data DIR or set data in the config (or "
                          "--store URL for the accounts in PostgreSQL)")
    if config.data_key_path is None:
        raise ConfigError("no data key: pass --data-key FILE (the file every node has) or "
                          "set data_key in the config")
    return config


def _where(config: GatewayConfig) -> str:
    if config.store is None:
        assert config.data is not None
        return str(config.data / "accounts.db")
    from ..storage.postgres.url import redact

    return f"PostgreSQL {redact(config.store)}"


def _record(config: GatewayConfig, action: str, subject: str) -> None:
    """The act in the gateway's audit trail; a failure is said, not fatal (it is done)."""
    from ..audit import record_offline, record_offline_postgres
    from ..storage.errors import StorageError

    try:
        if config.store is not None:
            record_offline_postgres(config.store, action, subject)
        else:
            assert config.data is not None
            record_offline(config.data, action, subject)
    except StorageError as exc:
        print(f"fleet-gateway: warning: not in the audit trail: {exc}", file=sys.stderr)


def _password(args: argparse.Namespace) -> str:
    if args.password_file is not None:
        lines = args.password_file.read_text().splitlines()
        if not lines:
            raise AccountError(f"{args.password_file}: empty")
        return lines[0]
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise AccountError("the two passwords differ")
    return first
