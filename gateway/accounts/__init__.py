"""Accounts: operators (the whole fleet) and owners (their own networks), kept apart from the
device store in `<data>/accounts.db`.

An account is an email address and a password. The password is kept as an Argon2id hash
(`passwords`); the email address and the optional personal details are encrypted with the data
key (`datakey`, AES-GCM) and found by a keyed hash (HMAC-SHA256 with a key derived from the
data key), so the file alone names nobody.
"""

from .datakey import DataKey
from .errors import AccountError, AccountExists, BadLogin, DataKeyError, OwnerCodeRefused
from .store import Account, AccountStore

__all__ = ["Account", "AccountError", "AccountExists", "AccountStore", "BadLogin", "DataKey",
           "DataKeyError", "OwnerCodeRefused"]
