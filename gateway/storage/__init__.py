"""Durable storage for the gateway: the data model, reports, connection status, MQTT state.

`Store` (interface.py) is what callers use; `open_sqlite_store(data_dir)` gives the embedded
SQLite implementation. Writes pass through one group-commit writer (writer.py): many messages
per transaction, one bounded queue per network in front, served in turn (backpressure for
that network only, never loss), and an acknowledgement only after the commit.
"""

from .errors import SchemaError, StorageError, StoreClosed
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
    "DB_NAME", "ConnectionEvent", "ConnectionStatus", "Dequeued", "Enqueued", "EnqueuedMany",
    "QueuedMessage", "ReportRow", "RetainedChange", "RetainedMessage", "SessionChange",
    "SessionDeleted", "SessionSaved", "SQLiteStore", "SchemaError", "StateRecord", "Store",
    "StoreClosed", "StorageError", "StoreStatistics", "StoredSession", "Ticket", "ValueLocation",
    "open_sqlite_store",
]
