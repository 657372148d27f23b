"""Accounts: operators (the whole fleet) and owners (their own networks), kept apart from the
device store: in `<data>/accounts.db` (`AccountStore`), or with a PostgreSQL store in its
`console_*` tables (`pgstore.PostgresAccountStore`, shared by a cluster's nodes).
`open_accounts(config)` opens the one a configuration names.

An account is an email address and a password. The password is kept as an Argon2id hash
(`passwords`); the email address and the optional personal details are encrypted with the data
key (`datakey`, AES-GCM) and found by a keyed hash (HMAC-SHA256 with a key derived from the
data key), so the file or the database alone names nobody.
"""

from .base import Account, AccountsBase
from .datakey import DataKey
from .errors import (
                     AccountError,
                     AccountExists,
                     AccountsUnavailable,
                     BadLogin,
                     DataKeyError,
                     OwnerCodeRefused,
)
from .factory import open_accounts
from .store import AccountStore

__all__ = ["Account", "AccountError", "AccountExists", "AccountStore", "AccountsBase",
           "AccountsUnavailable", "BadLogin", "DataKey", "DataKeyError", "OwnerCodeRefused",
           "open_accounts"]
