"""The bar list in cluster mode: the networks erased by an operator, in `cluster_bars`.

The same surface as `gateway.http.bars.BarList` (admission asks `network in bars`; the API
bars, lifts and lists), held in memory for admission and kept in the table: `bar` and `lift`
change memory at once and queue the write and a NOTIFY (`Cluster` writes them in order);
the other nodes apply the NOTIFY at once and re-read the table after a reconnect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from uuid import UUID

from ..http.bars import Bar, BarList

__all__ = ["ClusterBars"]


class ClusterBars(BarList):
    """Barred networks, shared by the nodes (see the module docstring)."""

    def __init__(self, write: Callable[[UUID, datetime | None, str | None], None]) -> None:
        """`write(network, since, by)`: queue the row's write (by None: the lift)."""
        super().__init__(None)  # no file: the table is the copy that survives
        self._write = write

    def bar(self, network: UUID, by: str, now: datetime) -> None:
        if network not in self._bars:
            self._bars[network] = Bar(network, now, by)
            self._write(network, now, by)

    def lift(self, network: UUID) -> bool:
        """Remove a bar; False when the network was not barred."""
        if self._bars.pop(network, None) is None:
            return False
        self._write(network, None, None)
        return True

    # -- from the other nodes ----------------------------------------------------------

    def apply(self, bar: Bar | None, network: UUID) -> None:
        """Another node barred (`bar`) or lifted (None) `network`: memory only."""
        if bar is None:
            self._bars.pop(network, None)
        else:
            self._bars.setdefault(network, bar)

    def replace(self, bars: Iterable[Bar]) -> None:
        """The table's bars, re-read after a reconnect."""
        self._bars = {b.network: b for b in bars}
