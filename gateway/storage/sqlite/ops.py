"""The write side on SQLite: how the single writer applies a batch of operations.

The operations are the shared ones (gateway/storage/sql/: data_ops, session_ops, audit_ops);
`WriteSide.apply_batch` runs a batch in one `BEGIN IMMEDIATE ... COMMIT` and returns one
outcome per operation (its result, or `Failed`). Report rows of consecutive `Reports`
operations go to SQLite in one `executemany`. An operation that finds bad input (an unknown
value UUID) fails alone before touching SQL; if SQL itself fails (or a value cannot be
bound), the transaction is rolled back and the batch is retried one operation per
transaction, so one poisoned operation never costs the others.

Every row inserted into `state_log` adds its size (UTF-8 data bytes + `ROW_OVERHEAD`) to its
network's `network_usage` row in the same transaction (one upsert per network per flush);
erasure deletes the row with the rest. `WriteSide.usage` mirrors the values this writer last
wrote, for the stored-bytes quota (checked by ingest before it queues readings).

Runs only in the writer's worker thread (see gateway/storage/sql/write_side.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ..errors import StorageError
from ..sql.data_ops import Reports
from ..sql.write_side import ROW_OVERHEAD, WriteSideBase
from ..writer import Failed
from .dialect import SQLiteDialect


class WriteSide(WriteSideBase):
    """The write connection, its caches, and SQLite's batches."""

    dialect = SQLiteDialect

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(conn)
        self.pending_stamped: list[tuple[int, int, int, str, int, int, str]] = []
        self.pending_stamped_bytes: dict[int, int] = {}
        self.busy_retries = 0
        self.erased_in_batch = False

    def network_erased(self) -> None:
        # The writer connection runs with secure_delete on for good (configure_writer): the
        # deleted cells are overwritten with zeros in their pages; the batch then truncates
        # the WAL, which still holds their old page images (`_purge_wal`).
        self.reset_caches()
        self.erased_in_batch = True

    def add_usage(self, per_network: dict[int, int]) -> None:
        """Add bytes to networks' usage rows (in the current transaction)."""
        for nid, size in per_network.items():
            (self.usage[nid],) = self.conn.execute(
                "INSERT INTO network_usage (network_id, stored_bytes) VALUES (?, ?) "
                "ON CONFLICT (network_id) DO UPDATE SET "
                "stored_bytes = stored_bytes + excluded.stored_bytes RETURNING stored_bytes",
                (nid, size)).fetchone()

    # -- batches -----------------------------------------------------------------------
    def _by_network(self, per_state: dict[int, int], into: dict[int, int]) -> None:
        networks = self.state_networks
        for sid, size in per_state.items():
            nid = networks[sid]
            into[nid] = into.get(nid, 0) + size
        per_state.clear()

    def flush_rows(self) -> None:
        usage: dict[int, int] = {}
        if self.pending_rows:
            self.conn.executemany(
                "INSERT INTO state_log (state_id, ts_us, received_us, data) VALUES (?, ?, ?, ?)",
                self.pending_rows)
            self.pending_rows.clear()
            self._by_network(self.pending_bytes, usage)
        if self.pending_stamped:
            # A reading the device time-stamped is identified by (value, timestamp, data): a
            # QoS 1 resend (its PUBACK lost to a crash or a dropped connection) is stored
            # once. The lookup walks the (state, time) index the insert walks anyway.
            (last,) = self.conn.execute("SELECT coalesce(max(id), 0) FROM state_log").fetchone()
            before = self.conn.total_changes
            self.conn.executemany(
                "INSERT INTO state_log (state_id, ts_us, received_us, data) "
                "SELECT ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM state_log "
                "WHERE state_id = ? AND ts_us = ? AND data = ?)", self.pending_stamped)
            if self.conn.total_changes - before == len(self.pending_stamped):
                self._by_network(self.pending_stamped_bytes, usage)
            else:  # resends were skipped: count what went in (the rows just appended)
                self.pending_stamped_bytes.clear()
                for nid, size in self.conn.execute(
                        "SELECT s.network_id, sum(length(CAST(l.data AS BLOB)) + ?) "
                        "FROM state_log l JOIN states s ON s.id = l.state_id "
                        "WHERE l.id > ? GROUP BY s.network_id", (ROW_OVERHEAD, last)):
                    usage[nid] = usage.get(nid, 0) + size
            self.pending_stamped.clear()
        if usage:
            self.add_usage(usage)

    def _begin(self) -> None:
        while True:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                # Another process (a backup, the sqlite3 shell) holds the write lock past
                # busy_timeout: wait again rather than fail writes we were asked to keep.
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                self.busy_retries += 1

    def _apply(self, op: Any) -> Any:
        if isinstance(op, Reports):
            try:
                rows = op.rows_for(self)
            except StorageError as exc:
                return Failed(exc)
            plain, stamped = self.pending_bytes, self.pending_stamped_bytes
            for row in rows:
                data = row[3]
                size = (len(data) if data.isascii() else len(data.encode())) + ROW_OVERHEAD
                if row[1] == row[2]:  # no device timestamp: every receipt is a reading
                    self.pending_rows.append(row)
                    plain[row[0]] = plain.get(row[0], 0) + size
                else:
                    self.pending_stamped.append((*row, row[0], row[1], row[3]))
                    stamped[row[0]] = stamped.get(row[0], 0) + size
            return None
        return self.apply_one(op)

    def apply_batch(self, ops: Sequence[Any]) -> list[Any]:
        self.erased_in_batch = False
        try:
            self._begin()
            try:
                outcomes = [self._apply(op) for op in ops]
                self.flush_rows()
                self.conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        except Exception:  # SQL, or a value SQLite cannot bind: isolate it
            outcomes = [self._apply_alone(op) for op in ops]
        if self.erased_in_batch:
            self._purge_wal()
        return outcomes

    def _apply_alone(self, op: Any) -> Any:
        try:
            self._begin()
            try:
                outcome = self._apply(op)
                self.flush_rows()
                self.conn.execute("COMMIT")
                return outcome
            except BaseException:
                self._rollback()
                raise
        except Exception as exc:  # this operation alone fails, never the writer
            return Failed(StorageError(f"{type(op).__name__} failed: {exc!r}"))

    def _rollback(self) -> None:
        self.pending_rows.clear()
        self.pending_stamped.clear()
        self.pending_bytes.clear()
        self.pending_stamped_bytes.clear()
        self.reset_caches()
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def _purge_wal(self) -> None:
        # Erased rows were overwritten in the database (secure_delete); their old page
        # images still sit in the WAL until a checkpoint copies and truncates it.
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass  # readers active: the next automatic checkpoint finishes the job


__all__ = ["ROW_OVERHEAD", "WriteSide"]
