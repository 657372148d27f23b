"""Certificate expiry for the networks list, read from the CA's inventory when it is here.

The store records the serial a network connected with, not the certificate's expiry. When
the gateway's CA home holds the CA's `inventory.db` (a one-machine setup), `InventoryLookup`
reads `not_after` for those serials; when it does not (the production layout: only root.crt
and crl.pem on the gateway), every lookup gives nothing and the API shows `null`. A lookup
never fails a request: an unreadable inventory is the same as none.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import trio


class InventoryLookup:
    def __init__(self, ca_home: Path | None) -> None:
        self.path = ca_home / "inventory.db" if ca_home is not None else None
        self.failures = 0

    def _read(self, serials: list[str]) -> dict[str, datetime]:
        from ca.errors import CAError
        from ca.inventory import Inventory

        try:
            inventory = Inventory.open(self.path)  # type: ignore[arg-type]
        except (CAError, OSError):
            self.failures += 1
            return {}
        try:
            out = {}
            for serial in serials:
                record = inventory.get(int(serial, 16))
                if record is not None:
                    out[serial] = record.not_after
            return out
        except Exception:  # sqlite3 or a damaged row: expiry is advisory
            self.failures += 1
            return {}
        finally:
            inventory.close()

    async def not_after(self, serials: Iterable[str | None]) -> dict[str, datetime]:
        """`{serial hex: not_after}` for the serials the inventory knows."""
        wanted = sorted({s for s in serials if s})
        if not wanted or self.path is None or not self.path.is_file():
            return {}
        return await trio.to_thread.run_sync(self._read, wanted)
