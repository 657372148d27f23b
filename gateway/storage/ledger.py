"""The erasure ledger: which networks were erased and when, kept apart from the backups.

A backup is a copy of the store as it was; restoring it would bring back every network
erased after it was taken. So each erasure is also appended here (the network UUID and the
time, nothing else: the ledger holds no personal data) before the store's rows are deleted,
and `restore` re-applies every erasure recorded after the backup's `taken_at`. The file is
append-only JSON lines, fsynced per entry, 0600; keep it on other storage than the backups
(`erasure_ledger` in the gateway's config) so that losing one never loses the other.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from uuid import UUID

from .errors import StorageError

LEDGER_FILE = "erasures.jsonl"


@dataclass(frozen=True, slots=True)
class Erasure:
    network: UUID
    at: datetime


class ErasureLedger:
    """Append-only erasure records in one file (created 0600 on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, network: UUID, at: datetime) -> None:
        """Append one erasure and fsync it.

        Raises:
            StorageError: the ledger cannot be written (the erasure must not go ahead).
        """
        line = json.dumps({"network": str(network), "at": at.isoformat()}) + "\n"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StorageError(f"cannot write the erasure ledger {self.path}: "
                               f"{exc.strerror or exc}") from None

    def since(self, when: datetime) -> list[Erasure]:
        """Every erasure recorded at or after `when`, oldest first (none without a file).

        Raises:
            StorageError: the file exists but cannot be read or holds a bad line (a restore
                must not go ahead on a ledger it cannot trust).
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"cannot read the erasure ledger {self.path}: "
                               f"{exc.strerror or exc}") from None
        found = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                erasure = Erasure(UUID(doc["network"]), datetime.fromisoformat(doc["at"]))
                if erasure.at.tzinfo is None:
                    raise ValueError("time without a UTC offset")
            except (ValueError, KeyError, TypeError) as exc:
                raise StorageError(f"erasure ledger {self.path} line {number} is damaged: "
                                   f"{exc}") from None
            if erasure.at >= when:
                found.append(erasure)
        return found
