"""Retention on SQLite: readings and commands older than a cutoff are deleted in bounded steps.

`state_log` has no index on time alone (its index is `(state_id, ts_us)`, the one the reads
need), so a step walks the states in id order from a cursor and, for each, deletes the rows
older than the cutoff through that index: the cost is what is deleted plus one index probe
per state, never a scan of the whole log. A step stops after `STATES_PER_STEP` states or
`ROWS_PER_STEP` rows, whichever comes first, so the writer (which every device's reports
wait on) is held for a few milliseconds at a time however much has to go; the store runs
steps until the walk is done. What a step deletes is subtracted from each network's
`network_usage` row in the same transaction, so the stored-bytes quota frees at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .ops import ROW_OVERHEAD

STATES_PER_STEP = 500
ROWS_PER_STEP = 5_000


@dataclass(frozen=True, slots=True)
class DropHistoryStep:
    """Delete rows of `state_log` stamped before `cutoff_us`, for states from id
    `from_state` on, within one step's bounds.

    `apply` returns `(rows deleted, the state id to resume from, or None when done)`."""

    cutoff_us: int
    from_state: int = 0
    max_rows: int = ROWS_PER_STEP
    max_states: int = STATES_PER_STEP

    def apply(self, side: Any) -> tuple[int, int | None]:
        conn = side.conn
        states = conn.execute(
            "SELECT id, network_id FROM states WHERE id >= ? ORDER BY id LIMIT ?",
            (self.from_state, self.max_states)).fetchall()
        budget = self.max_rows
        freed: dict[int, int] = {}
        resume: int | None = None
        for state_id, network_id in states:
            rows = conn.execute(
                "SELECT id, length(CAST(data AS BLOB)) FROM state_log "
                "WHERE state_id = ? AND ts_us < ? LIMIT ?",
                (state_id, self.cutoff_us, budget)).fetchall()
            if rows:
                conn.executemany("DELETE FROM state_log WHERE id = ?",
                                 [(row_id,) for row_id, _ in rows])
                size = sum(length for _, length in rows) + ROW_OVERHEAD * len(rows)
                freed[network_id] = freed.get(network_id, 0) + size
                budget -= len(rows)
            if not budget:
                resume = state_id  # it may hold more: start the next step on it again
                break
        else:
            if len(states) == self.max_states:
                resume = states[-1][0] + 1
        for network_id, size in freed.items():
            (side.usage[network_id],) = conn.execute(
                "UPDATE network_usage SET stored_bytes = max(stored_bytes - ?, 0) "
                "WHERE network_id = ? RETURNING stored_bytes", (size, network_id)
            ).fetchone() or (0,)
        return self.max_rows - budget, resume
