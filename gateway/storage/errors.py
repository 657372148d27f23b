"""The error tree of `gateway.storage`.

- `StorageError`: root; the store could not do what was asked (disk full, I/O error, closed).
  The gateway must not acknowledge a message whose write raised it.
- `StoreClosed`: the store is shut down (or shutting down) and takes no more writes.
- `SchemaError`: the database file is from a newer fleetgate, or not ours.

Caller mistakes about data (unknown value UUID) are answered with None / False, not raised;
a declaration over the network-wide caps raises `gateway.model.DeclarationRejected`.
"""

from __future__ import annotations

from ..errors import GatewayError


class StorageError(GatewayError):
    """Root of every error raised by `gateway.storage`."""


class StoreClosed(StorageError):
    """The store takes no more writes."""


class SchemaError(StorageError):
    """The database has a schema this code cannot use."""
