"""Durable storage for the gateway: the data model, reports, connection status, MQTT state.

`Store` (interface.py) is what callers use; `open_sqlite_store(data_dir)` gives the embedded
SQLite implementation (one process per data folder: it holds the folder's lock), and
`gateway.storage.postgres.open_postgres_store(url)` the PostgreSQL one; both run the same
operations and queries (sql/), each through its own dialect. Writes pass through
one group-commit writer (writer.py): many messages per transaction, one bounded queue per
network in front, served in turn (backpressure for that network only, never loss), and an
acknowledgement only after the commit.
"""

from .errors import (
    BadStoreURL,
    FolderInUse,
    SchemaError,
    StorageError,
    StoreClosed,
    StoreUnavailable,
)
from .interface import Store
from .records import (
    ConnectionEvent,
    ConnectionStatus,
    Dequeued,
    Enqueued,
    EnqueuedMany,
    QueuedMessage,
    ReportRow,
    RetainedChange,
    RetainedMessage,
    SessionChange,
    SessionDeleted,
    SessionSaved,
    StateRecord,
    StoredSession,
    StoreStatistics,
    ValueLocation,
)
from .sqlite import DB_NAME, SQLiteStore, open_sqlite_store
from .writer import Ticket

__all__ = [
    "BadStoreURL", "DB_NAME", "FolderInUse", "StoreUnavailable", "ConnectionEvent",
    "ConnectionStatus", "Dequeued", "Enqueued", "EnqueuedMany",
    "QueuedMessage", "ReportRow", "RetainedChange", "RetainedMessage", "SessionChange",
    "SessionDeleted", "SessionSaved", "SQLiteStore", "SchemaError", "StateRecord", "Store",
    "StoreClosed", "StorageError", "StoreStatistics", "StoredSession", "Ticket", "ValueLocation",
    "open_sqlite_store",
]
