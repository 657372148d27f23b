"""The accounts package's one error tree."""

from __future__ import annotations

from ..errors import GatewayError


class AccountError(GatewayError):
    """Base of every error this package raises on purpose."""


class DataKeyError(AccountError):
    """The data key file is missing where required, unreadable, malformed or too open, or a
    ciphertext does not open with any key in it."""


class AccountExists(AccountError):
    """An account with this email address exists already."""


class BadLogin(AccountError):
    """Unknown email or wrong password: deliberately one error for both."""


class OwnerCodeRefused(AccountError):
    """An owner code that is unknown or was used already (one answer for both)."""


class AccountsUnavailable(AccountError):
    """The accounts' PostgreSQL database cannot be reached (or the connection was lost)."""
