"""`SQLiteStore`: the embedded default store, one file under the gateway's data folder.

One write connection, driven by the group-commit `Writer` (writes queue, commit in batches, in
a worker thread); one read connection for the HTTP API and cache fills (WAL: reads never wait
for the writer, and see only committed data). Open it with `open_sqlite_store(data_dir)`.

Durability: `synchronous=FULL` by default, i.e. one fsync of the WAL per transaction, so what
a commit acknowledged survives a power cut, not only a process crash. `synchronous="NORMAL"`
keeps crash safety (SIGKILL) and gives up only the last transactions on power loss.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import trio

from ..errors import StorageError
from ..sql.convert import to_us
from ..sql.store_base import SQLStore, make_writer, running
from ..writer import DEFAULT_QUEUE_LIMITS, QueueLimits
from . import ops
from .dialect import SQLiteDialect
from .lock import lock_folder
from .retention import DropHistoryStep
from .schema import configure_reader, configure_writer, migrate

DB_NAME = "fleetgate.sqlite3"
T = TypeVar("T")


def _create_private(path: Path) -> None:
    """Create the database file 0600 before SQLite does (it holds personal data)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)


class SQLiteStore(SQLStore):
    """A `gateway.storage.Store` on one SQLite file. Build it with `open_sqlite_store`.

    `max_batch` (readings, or other operations' cost, per transaction): 2,000 commit in
    10-20 ms on a shared 2-core machine, which bounds how long one network's flood holds
    another network's PUBACK (bench/writer_fairness.py: p50 17 ms vs 45 ms at 5,000), and the
    flood's own rate was the same at both."""

    def __init__(self, path: Path, *, synchronous: str = "FULL", max_queue: int = 10_000,
                 max_batch: int = 2_000, queue: QueueLimits = DEFAULT_QUEUE_LIMITS) -> None:
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        self.path = path
        try:
            _create_private(path)
        except OSError as exc:
            raise StorageError(f"cannot create {path}: {exc.strerror or exc}") from None
        try:
            wconn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            configure_writer(wconn, synchronous=synchronous)
            self.schema_version = migrate(wconn)
            rconn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            configure_reader(rconn)
            cconn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            cconn.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open {path}: {exc}") from exc
        self._side = ops.WriteSide(wconn)
        self._read_conn = rconn
        self._read_db = SQLiteDialect(rconn)
        self._checkpoint_conn = cconn
        self.checkpoints = 0  # background checkpoint rounds run
        self.checkpointed_commits = 0  # commits whose pages are all in the database file
        self._read_limiter = trio.CapacityLimiter(1)
        self._writer = make_writer(self._side, max_queue=max_queue, max_batch=max_batch,
                                   queue=queue)

    # -- lifecycle ----------------------------------------------------------------------
    async def _checkpointer(self, interval: float) -> None:
        """Copy the WAL into the database beside the writer (PASSIVE: never blocks it).

        SQLite releases the GIL while it copies, so this uses the second core, and the
        writer's commits stay short. Runs until cancelled.
        """
        while True:
            await trio.sleep(interval)
            upto = self._writer.commits
            if upto == self.checkpointed_commits:
                continue
            try:
                busy, log, copied = await trio.to_thread.run_sync(
                    lambda: self._checkpoint_conn.execute(
                        "PRAGMA wal_checkpoint(PASSIVE)").fetchone())
            except sqlite3.Error:
                continue  # I/O trouble: the writer's safety-net checkpoint takes over
            self.checkpoints += 1
            if not busy and copied == log:  # everything up to `upto` is in the database
                self.checkpointed_commits = upto

    def _close_connections(self) -> None:
        for conn in (self._side.conn, self._read_conn, self._checkpoint_conn):
            conn.close()

    # -- retention ----------------------------------------------------------------------
    async def drop_reports_before(self, cutoff: datetime) -> int:
        """Retention: delete the readings and commands stamped before `cutoff`, in bounded
        writer steps (`retention`), keeping each network's stored bytes right. Returns the
        rows removed."""
        removed, resume = 0, 0
        while resume is not None:
            step, resume = await self._write(DropHistoryStep(to_us(cutoff), resume))
            removed += step
        return removed

    # -- reads --------------------------------------------------------------------------
    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        def run() -> T:
            try:
                return fn(self._read_db, *args)
            except sqlite3.Error as exc:
                if self._read_conn.in_transaction:
                    self._read_conn.execute("ROLLBACK")
                raise StorageError(f"read failed: {exc}") from exc
        return await trio.to_thread.run_sync(run, limiter=self._read_limiter)


@asynccontextmanager
async def open_sqlite_store(
    data_dir: str | os.PathLike[str], *, synchronous: str = "FULL", max_queue: int = 10_000,
    max_batch: int = 2_000, reset_connections: bool = True, checkpoint_interval: float = 0.2,
    queue: QueueLimits = DEFAULT_QUEUE_LIMITS, lock: bool = True,
) -> AsyncIterator[SQLiteStore]:
    """Open (creating and migrating) `<data_dir>/fleetgate.sqlite3` and run its writer.

    With `lock` (the default) the folder's lock is taken first and held while the store is
    open (lock.py): a second process opening the folder gets `FolderInUse`. `lock=False` is
    for a caller that holds it already.

    On exit, everything queued is committed before the file is closed. With
    `reset_connections`, networks left online by a previous process are marked offline
    (reason GATEWAY_RESTART): a restarted gateway holds no connection yet.
    """
    path = Path(data_dir) / DB_NAME
    held = lock_folder(Path(data_dir)) if lock else None
    try:
        store = await trio.to_thread.run_sync(
            lambda: SQLiteStore(path, synchronous=synchronous, max_queue=max_queue,
                                max_batch=max_batch, queue=queue))
    except BaseException:
        if held is not None:
            held.release()
        raise
    try:
        async with running(store, reset_connections=reset_connections,
                           beside=partial(store._checkpointer, checkpoint_interval)):
            yield store
    finally:
        if held is not None:
            held.release()
