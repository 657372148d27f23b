"""Small file-system primitives the store builds on: atomic and exclusive writes, fsyncs.

Atomic write: write a temp file in the same folder, fsync it, rename it over the target,
fsync the folder; a reader sees the old file or the new one, never a mix, even after a crash.
Bulk output (device bundles) skips per-file fsyncs and syncs the whole file system once
(`syncfs`), which is what makes thousands of bundles per second possible.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import secrets
from pathlib import Path

from .errors import OutputError

_libc = None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file directly in `folder`, then the folder itself."""
    for f in folder.iterdir():
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_dir(folder)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` atomically and durably; the file gets `mode` from birth."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)  # umask must not widen or narrow what we asked for
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_new(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Create `path` (which must not exist) with `data`, no fsync (the caller syncs once)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        if mode & 0o077 == 0:
            os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def syncfs(path: Path) -> None:
    """Flush every dirty page of the file system holding `path` (Linux syncfs(2)).

    Falls back to os.sync() where syncfs is unavailable.
    """
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        _libc = ctypes.CDLL(name, use_errno=True) if name else False
    if _libc and hasattr(_libc, "syncfs"):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if _libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    os.sync()


def prepare_out_dir(out_dir: os.PathLike[str] | str) -> Path:
    """Make sure `out_dir` is a writable folder (created with parents if missing).

    Raises OutputError naming the problem.
    """
    out = Path(out_dir).absolute()
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
    if not out.is_dir():
        raise OutputError(f"output {out} is not a folder")
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {out} is not writable")
    return out


def make_staging(out: Path) -> Path:
    """A fresh hidden 0700 folder inside `out` for output that appears by rename."""
    staging = out / f".staging-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        staging.mkdir(mode=0o700)
    except OSError as exc:
        raise OutputError(f"cannot write in {out}: {exc.strerror or exc}") from None
    return staging
