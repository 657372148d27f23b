"""The account store fixtures over both engines (accounthelpers.py)."""

from tests.unit.accounts.accounthelpers import engine, store  # noqa: F401  (fixtures)
