"""The live device connections, indexed by what acts on them (no I/O).

Revocation closes the connections of the serials a CRL lists, erasure those of one network,
shutdown all of them. Each asks the registry for exactly the connections it touches, so its
cost follows what it touches, never how many devices are connected: a CRL change walks the
smaller of (revoked serials, live serials), an erasure one network's set.

A connection is registered when it is accepted (`add`: counted for shutdown and
`max_connections`), indexed once admission knows its identity (`admitted`), and removed when
it ends (`remove`, idempotent).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from .identity import DeviceIdentity

__all__ = ["ConnectionRegistry", "Registered"]


class Registered(Protocol):
    """What the registry needs of a connection."""

    identity: DeviceIdentity | None


C = TypeVar("C", bound=Registered)


class ConnectionRegistry(Generic[C]):
    """Live connections: all of them, by network UUID (string) and by certificate serial."""

    __slots__ = ("_all", "_by_network", "_by_serial")

    def __init__(self) -> None:
        self._all: set[C] = set()
        self._by_network: dict[str, set[C]] = {}
        self._by_serial: dict[int, set[C]] = {}

    def __len__(self) -> int:
        return len(self._all)

    def __iter__(self) -> Iterator[C]:
        """A snapshot: closing connections while iterating is safe."""
        return iter(list(self._all))

    def __contains__(self, connection: object) -> bool:
        return connection in self._all

    def add(self, connection: C) -> None:
        self._all.add(connection)

    def admitted(self, connection: C) -> None:
        """Index `connection` by its (now known) identity."""
        identity = connection.identity
        assert identity is not None and connection in self._all
        self._by_network.setdefault(identity.network, set()).add(connection)
        self._by_serial.setdefault(identity.serial, set()).add(connection)

    def remove(self, connection: C) -> bool:
        """Forget `connection`; return whether it was registered."""
        if connection not in self._all:
            return False
        self._all.discard(connection)
        identity = connection.identity
        if identity is not None:
            _discard(self._by_network, identity.network, connection)
            _discard(self._by_serial, identity.serial, connection)
        return True

    def of_network(self, network: str) -> list[C]:
        return list(self._by_network.get(network, ()))

    def with_serial_in(self, serials: set[int] | frozenset[int]) -> list[C]:
        """The connections whose certificate serial is in `serials`."""
        if len(serials) < len(self._by_serial):
            keys = [s for s in serials if s in self._by_serial]
        else:
            keys = [s for s in self._by_serial if s in serials]
        return [c for s in keys for c in self._by_serial[s]]


def _discard(index: dict, key: object, connection: object) -> None:
    held = index.get(key)
    if held is not None:
        held.discard(connection)
        if not held:
            del index[key]
