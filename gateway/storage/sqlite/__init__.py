"""The SQLite store (the embedded default). SQLite's specifics stay in this package: the
schema, the write side's transactions and WAL, its dialect of the SQL both stores share
(gateway/storage/sql/)."""

from .store import DB_NAME, SQLiteStore, open_sqlite_store

__all__ = ["DB_NAME", "SQLiteStore", "open_sqlite_store"]
