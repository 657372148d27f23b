"""Moving a data folder's accounts file into the PostgreSQL store (`fleet-gateway account
import`), for a gateway that kept its console's accounts in `<data>/accounts.db` beside a
PostgreSQL store before they moved into that database.

The rows are copied as stored: ciphertexts, keyed hashes, password and token hashes are not
opened (one email is, to prove they are sealed under the key the PostgreSQL accounts use),
and account ids are kept, since the audit trail and the logs name accounts by id.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .datakey import DataKey
from .errors import AccountError
from .pgstore import PostgresAccountStore


def check_key(source: Path, key: DataKey) -> None:
    """Raise DataKeyError unless `key` opens the accounts file's rows (before `import_file`
    binds the PostgreSQL accounts to that key)."""
    accounts, _, _ = _read(source)
    if accounts:
        key.decrypt(accounts[0][3], b"email")


def _read(source: Path) -> tuple[list[tuple], list[tuple], list[tuple]]:
    try:
        db = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise AccountError(f"{source}: {exc}") from None
    try:
        return (db.execute("SELECT id, lookup, role, email, details, password, created_us "
                           "FROM accounts ORDER BY id").fetchall(),
                db.execute("SELECT network, code_hash, owner_id, claimed_us "
                           "FROM owner_codes").fetchall(),
                db.execute("SELECT token_hash, account_id, csrf, created_us, seen_us, "
                           "address FROM sessions").fetchall())
    except sqlite3.Error as exc:
        raise AccountError(f"{source} is not an accounts file: {exc}") from None
    finally:
        db.close()


def import_file(source: Path, target: PostgresAccountStore) -> int:
    """Copy every account, ownership and session of the SQLite accounts file `source` into
    `target`, which must hold no account yet. Owner codes the cluster recorded meanwhile stay;
    a network unowned there takes the owner the file gives it. Returns the accounts copied.

    Raises:
        AccountError: `target` has accounts already, or `source` is not an accounts file.
        DataKeyError: the file's rows are sealed under a key `target`'s key file lacks.
    """
    accounts, codes, sessions = _read(source)
    if accounts:
        target.key.decrypt(accounts[0][3], b"email")  # DataKeyError: sealed under another key
    with target._tx():
        if target._one("SELECT 1 FROM console_accounts LIMIT 1") is not None:
            raise AccountError("the PostgreSQL store has console accounts already: "
                               "nothing imported")
        target._many("INSERT INTO console_accounts (id, lookup, role, email, details, "
                     "password, created_us) OVERRIDING SYSTEM VALUE "
                     "VALUES (%s, %s, %s, %s, %s, %s, %s)", accounts)
        target._run("SELECT setval(pg_get_serial_sequence('console_accounts', 'id'), "
                    "coalesce(max(id), 0) + 1, false) FROM console_accounts")
        target._many("INSERT INTO console_owner_codes (network, code_hash, owner_id, "
                     "claimed_us) VALUES (%s, %s, %s, %s) ON CONFLICT (network) DO UPDATE "
                     "SET owner_id = excluded.owner_id, claimed_us = excluded.claimed_us "
                     "WHERE console_owner_codes.owner_id IS NULL", codes)
        target._many("INSERT INTO console_sessions (token_hash, account_id, csrf, created_us, "
                     "seen_us, address) VALUES (%s, %s, %s, %s, %s, %s)", sessions)
    return len(accounts)
