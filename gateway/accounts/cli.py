"""`fleet-gateway account add-operator EMAIL`: the first operator, before any console login;
`fleet-gateway account rotate-key`: every account under a fresh data key.

Exit codes follow gateway.cli: 0 done, 3 configuration (no data folder), 6 account refused
(exists, bad email or password, unusable key file).
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from pathlib import Path

from ..config import load_config
from ..errors import ConfigError
from .errors import AccountError
from .store import AccountStore

EXIT_ACCOUNT = 6


def account_verb(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, {"data": args.data})
        if config.data is None:
            raise ConfigError("no data folder: pass --data DIR or set data in the config")
    except ConfigError as exc:
        print(f"fleet-gateway: error: {exc}", file=sys.stderr)
        return 3
    if args.action == "rotate-key":
        return _rotate(config.data)
    if not args.email:
        print("fleet-gateway: error: add-operator needs an EMAIL", file=sys.stderr)
        return 2
    try:
        password = _password(args)
        store = AccountStore.in_folder(config.data, now_us=lambda: time.time_ns() // 1000)
        try:
            account = store.add(args.email, password, "operator")
        finally:
            store.close()
    except (AccountError, OSError) as exc:
        print(f"fleet-gateway: error: {exc}", file=sys.stderr)
        return EXIT_ACCOUNT
    print(f"operator account {account.id} created in {config.data / 'accounts.db'}")
    _record(config.data, "account.add-operator", f"operator:{account.id}")
    return 0


def _record(data: Path, action: str, subject: str) -> None:
    """The act in the gateway's audit trail; a failure is said, not fatal (it is done)."""
    from ..audit import record_offline
    from ..storage.errors import StorageError

    try:
        record_offline(data, action, subject)
    except StorageError as exc:
        print(f"fleet-gateway: warning: not in the audit trail: {exc}", file=sys.stderr)


def _rotate(data: Path) -> int:
    try:
        store = AccountStore.in_folder(data, now_us=lambda: time.time_ns() // 1000)
        try:
            key_id = store.rotate_key()
        finally:
            store.close()
    except (AccountError, OSError) as exc:
        print(f"fleet-gateway: error: {exc}", file=sys.stderr)
        return EXIT_ACCOUNT
    print(f"every account re-encrypted under data key {key_id}; the old key is gone "
          f"from {data / 'data.key'}")
    _record(data, "account.rotate-key", str(key_id))
    return 0


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
