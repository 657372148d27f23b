"""The bar list: networks whose identity may not connect, after an operator erased them.

Erasure removes a network's data; the bar keeps its certificate from re-creating it until an
operator lifts the bar (`DELETE /api/v1/bars/{uuid}`) or revokes the certificate
(`fleet-ca revoke`, the lasting answer). The list is small and kept in one JSON file beside
the store (`<data>/barred.json`, 0600, replaced atomically), or in memory without a folder.
The MQTT admission asks `network in bars` after the handshake.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from uuid import UUID

from .errors import HttpApiError

BARS_FILE = "barred.json"


@dataclass(frozen=True, slots=True)
class Bar:
    network: UUID
    since: datetime
    by: str  # the operator who erased the network


class BarList:
    """A set of barred network UUIDs, persisted on every change when `path` is given."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._bars: dict[UUID, Bar] = {}
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            for item in doc["barred"]:
                bar = Bar(UUID(item["network"]), datetime.fromisoformat(item["since"]),
                          str(item["by"]))
                self._bars[bar.network] = bar
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Refuse to start with an unreadable bar list: starting empty would re-admit
            # networks an operator erased.
            raise HttpApiError(f"cannot read bar list {path}: {exc}") from None

    def __contains__(self, network: object) -> bool:
        return network in self._bars

    def __len__(self) -> int:
        return len(self._bars)

    def all(self) -> list[Bar]:
        return sorted(self._bars.values(), key=lambda b: str(b.network))

    def bar(self, network: UUID, by: str, now: datetime) -> None:
        if network not in self._bars:
            self._bars[network] = Bar(network, now, by)
            self._save()

    def lift(self, network: UUID) -> bool:
        """Remove a bar; False when the network was not barred."""
        if self._bars.pop(network, None) is None:
            return False
        self._save()
        return True

    def _save(self) -> None:
        if self.path is None:
            return
        doc = {"barred": [{"network": str(b.network), "since": b.since.isoformat(),
                           "by": b.by} for b in self.all()]}
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".barred-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
