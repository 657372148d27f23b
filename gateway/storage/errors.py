"""The error tree of `gateway.storage`.

- `StorageError`: root; the store could not do what was asked (disk full, I/O error, closed).
  The gateway must not acknowledge a message whose write raised it.
- `StoreClosed`: the store is shut down (or shutting down) and takes no more writes.
- `SchemaError`: the database file is from a newer fleetgate, or not ours.
- `StoreUnavailable`: the PostgreSQL server cannot be reached (at open, or while
  reconnecting); the CLI exits with its own code when it happens at start.
- `BadStoreURL`: a store URL that is not `postgresql://USER@HOST:PORT/DB` (also a
  `ConfigError`: it comes from the configuration).
- `FolderInUse`: another process holds the SQLite data folder's lock.

Caller mistakes about data (unknown value UUID) are answered with None / False, not raised;
a declaration over the network-wide caps raises `gateway.model.DeclarationRejected`.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, GatewayError


class StorageError(GatewayError):
    """Root of every error raised by `gateway.storage`."""


class StoreClosed(StorageError):
    """The store takes no more writes."""


class SchemaError(StorageError):
    """The database has a schema this code cannot use."""


class StoreUnavailable(StorageError):
    """The PostgreSQL server cannot be reached (the message says why, never a password)."""


class BadStoreURL(StorageError, ConfigError):
    """The store URL is not one the PostgreSQL store can use (the message says why)."""


class FolderInUse(StorageError):
    """Another process (`pid`, when known) holds the lock of the data folder `folder`."""

    def __init__(self, folder: Path, pid: int | None) -> None:
        held = f" (pid {pid})" if pid else ""
        super().__init__(f"data folder {folder} is in use by another fleet-gateway{held}: "
                         "one process per data folder")
        self.folder, self.pid = folder, pid
