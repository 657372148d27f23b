"""Backups of the data folder that keep erasures erased.

`create_backup(data, out)` takes an online, consistent copy of the store with SQLite's backup
API (the gateway may keep running and writing), and writes `backup.json` beside it: the
format, the fleetgate version, the schema version and `taken_at`, the time taken BEFORE the
copy started, so an erasure that raced with the copy is re-applied too.

`restore_backup(backup, data, ledger)` puts the copy in place of the store (the gateway must
be stopped) and re-applies every erasure the ledger recorded at or after `taken_at`
(`gateway.storage.ledger`): data erased after the backup never comes back. The bar list
(`barred.json`) is not part of a backup: the live one keeps the latest decisions.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .storage.audit import AuditEvent, AuditRecord
from .storage.errors import StorageError
from .storage.ledger import ErasureLedger
from .storage.sqlite.lock import lock_folder
from .storage.sqlite.store import DB_NAME, open_sqlite_store

MANIFEST = "backup.json"
FORMAT = "fleetgate.backup/1"
PAGES_PER_STEP = 1024  # SQLite pages copied per backup step (between progress reports)

Progress = Callable[[int, int], None]
"""Called with (pages copied, pages in all) as the copy goes."""


@dataclass(frozen=True, slots=True)
class Manifest:
    taken_at: datetime
    schema_version: int
    fleetgate_version: str

    def to_json(self) -> dict[str, object]:
        return {"format": FORMAT, "taken_at": self.taken_at.isoformat(),
                "schema_version": self.schema_version,
                "fleetgate_version": self.fleetgate_version}


def _version() -> str:
    try:
        return version("fleetgate")
    except PackageNotFoundError:
        return "unknown"


def create_backup(data: Path, out: Path, *, progress: Progress | None = None,
                  now: datetime | None = None) -> Manifest:
    """Copy the store in `data` to the new folder `out` (0700; the copy 0600).

    Raises:
        StorageError: no store in `data`, `out` exists and is not empty, or the copy failed.
    """
    source = data / DB_NAME
    if not source.is_file():
        raise StorageError(f"no store in {data} ({DB_NAME} not found)")
    if out.exists() and any(out.iterdir()):
        raise StorageError(f"backup folder {out} is not empty")
    taken_at = now or datetime.now(UTC)
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = out / DB_NAME
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        dst = sqlite3.connect(target)
        try:
            src.backup(dst, pages=PAGES_PER_STEP,
                       progress=(lambda _s, left, total: progress(total - left, total))
                       if progress else None)
            schema = dst.execute("PRAGMA user_version").fetchone()[0]
        finally:
            dst.close()
            src.close()
    except (OSError, sqlite3.Error) as exc:
        raise StorageError(f"backup to {out} failed: {exc}") from None
    manifest = Manifest(taken_at, schema, _version())
    (out / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
    return manifest


def read_manifest(backup: Path) -> Manifest:
    """The manifest of the backup in `backup`.

    Raises:
        StorageError: not a fleetgate backup folder, or a damaged one.
    """
    try:
        doc = json.loads((backup / MANIFEST).read_text(encoding="utf-8"))
        if doc.get("format") != FORMAT:
            raise ValueError(f"format {doc.get('format')!r} is not {FORMAT}")
        manifest = Manifest(datetime.fromisoformat(doc["taken_at"]), int(doc["schema_version"]),
                            str(doc["fleetgate_version"]))
    except FileNotFoundError:
        raise StorageError(f"{backup} is not a fleetgate backup ({MANIFEST} not found)"
                           ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"backup manifest {backup / MANIFEST} is damaged: {exc}") from None
    if not (backup / DB_NAME).is_file():
        raise StorageError(f"backup {backup} holds no {DB_NAME}")
    return manifest


@dataclass(frozen=True, slots=True)
class Restored:
    manifest: Manifest
    erasures_reapplied: int


async def restore_backup(backup: Path, data: Path, ledger: ErasureLedger, *,
                         progress: Progress | None = None) -> Restored:
    """Replace the store in `data` by the backup's, then re-apply later erasures.

    The gateway must not be running on `data`: the folder's lock is taken first, and a
    running gateway's makes it `FolderInUse`. Raises StorageError (nothing is replaced
    when the backup or the ledger cannot be read, or the folder is in use).
    """
    manifest = read_manifest(backup)
    erasures = ledger.since(manifest.taken_at)  # read before anything changes
    held = lock_folder(data)  # FolderInUse while a gateway runs on it
    try:
        return await _restore_locked(backup, data, manifest, erasures, progress)
    finally:
        held.release()


async def _restore_locked(backup: Path, data: Path, manifest: Manifest, erasures: list,
                          progress: Progress | None) -> Restored:
    staged = data / f"{DB_NAME}.restoring"
    try:
        staged.unlink(missing_ok=True)
        os.close(os.open(staged, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
        src = sqlite3.connect(f"file:{backup / DB_NAME}?mode=ro", uri=True)
        dst = sqlite3.connect(staged)
        try:
            src.backup(dst, pages=PAGES_PER_STEP,
                       progress=(lambda _s, left, total: progress(total - left, total))
                       if progress else None)
        finally:
            dst.close()
            src.close()
        for suffix in ("-wal", "-shm"):  # the old store's: they must not meet the new file
            (data / f"{DB_NAME}{suffix}").unlink(missing_ok=True)
        os.replace(staged, data / DB_NAME)
    except (OSError, sqlite3.Error) as exc:
        staged.unlink(missing_ok=True)
        raise StorageError(f"restore into {data} failed: {exc}") from None
    async with open_sqlite_store(data, lock=False) as store:
        # The restored audit trail ends where the backup was taken; the restore and every
        # erasure it re-applies are entries after it (gateway/storage/audit.py).
        now = datetime.now(UTC)
        await store.append_audit(AuditRecord("restore", now, (AuditEvent(
            "restore", manifest.taken_at.isoformat(), {"erasures": len(erasures)}),)))
        for erasure in erasures:
            await store.erase_network(erasure.network, AuditRecord("restore", now, (
                AuditEvent("erase", str(erasure.network), {"reapplied": True}),)))
    return Restored(manifest, len(erasures))
