"""One process per SQLite data folder: an exclusive `flock` on `<data>/fleetgate.lock`.

Two gateways on one folder would each run a writer on the same file and split the fleet
between them (a control sent through one never reaches a device connected to the other).
The store takes the lock when it opens and holds it for the process's life (the kernel
drops it when the process exits, however it exits: no stale lock after a crash). The file
holds the holder's pid, for the refusal's message. Only writers take it: commands that read
(`audit verify`, `backup create`, which copies through SQLite's online backup) and the
console's account commands (their own file) keep working beside a running gateway.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import FolderInUse, StorageError

LOCK_FILE = "fleetgate.lock"


class FolderLock:
    """The held lock of one data folder; `release()` (or process exit) lets it go."""

    def __init__(self, folder: Path, fd: int) -> None:
        self.folder, self._fd = folder, fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = -1


def lock_folder(folder: Path) -> FolderLock:
    """Take `folder`'s lock (creating the folder 0700 and the file 0600 if missing).

    Raises:
        FolderInUse: another process holds it (its pid in the message when known).
        StorageError: the lock file cannot be created.
    """
    path = folder / LOCK_FILE
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            pid = int(os.pread(fd, 32, 0).decode().strip() or 0) or None
        except (OSError, ValueError):
            pid = None
        os.close(fd)
        raise FolderInUse(folder, pid) from None
    except OSError as exc:
        os.close(fd)
        raise StorageError(f"cannot lock {path}: {exc.strerror or exc}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return FolderLock(folder, fd)
