"""The SQLite store (the embedded default). SQL and SQLite specifics stay in this package."""

from .store import DB_NAME, SQLiteStore, open_sqlite_store

__all__ = ["DB_NAME", "SQLiteStore", "open_sqlite_store"]
