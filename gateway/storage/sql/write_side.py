"""What both engines' write sides share: the write connection (through its `Dialect`), the
writer thread's caches (uuid -> integer id) with the lookups that fill them, and the hooks
the shared operations call where an engine must do more than the SQL they run.

Each engine's `WriteSide` (sqlite/ops.py, postgres/ops.py) subclasses `WriteSideBase` and
adds its transaction, its way of writing a batch's readings (and counting their bytes into
`network_usage`), and its failure handling. The operations (data_ops.py, session_ops.py,
audit_ops.py) run on either through `side.db` and these methods.

Runs only in the writer's worker thread; the caches are that thread's and are dropped on any
rollback (they may hold ids the rollback undid). The event loop reads `networks` and `usage`
with single dict lookups, which the GIL keeps whole.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from gateway.model.errors import DeclarationRejected

from ..errors import StorageError
from ..writer import Failed
from .convert import REPORT
from .dialect import Dialect

ROW_OVERHEAD = 48  # bytes a stored reading costs besides its data: ids, times, index entry


class UnknownValue(StorageError):
    """A report or control names a value UUID this store does not hold (erased meanwhile?)."""


class WriteSideBase:
    """The write connection and the caches every engine's write side keeps.

    `conn` is the engine's connection (None while a PostgreSQL writer has none); `db`, the
    same in the shared SQL, is set with it. Subclasses name their dialect in `dialect` and
    implement `apply_batch` (the writer's entry: a batch in one transaction, one outcome per
    operation), `flush_rows` and `add_usage`; the hooks below do nothing unless an engine
    needs them to.
    """

    dialect: type[Dialect]
    busy_retries = 0  # times the write lock was busy past the timeout (SQLite only)

    def __init__(self, conn: Any = None) -> None:
        self.conn = conn
        self.networks: dict[UUID, int] = {}
        self.report_states: dict[UUID, int] = {}
        self.state_networks: dict[int, int] = {}  # state id -> network id
        self.usage: dict[int, int] = {}  # network id -> stored bytes, as last written
        self.pending_rows: list[tuple[int, int, int, str]] = []  # readings of the batch
        self.pending_bytes: dict[int, int] = {}  # state id -> bytes of its pending rows

    @property
    def conn(self) -> Any:
        return self._conn

    @conn.setter
    def conn(self, conn: Any) -> None:
        self._conn = conn
        self.db: Dialect = None if conn is None else self.dialect(conn)  # type: ignore[assignment]

    def reset_caches(self) -> None:
        self.networks.clear()
        self.report_states.clear()
        self.state_networks.clear()
        self.usage.clear()

    def stored_bytes(self, network: UUID) -> int | None:
        """The network's stored bytes as this writer last wrote them; None if not known."""
        nid = self.networks.get(network)
        return None if nid is None else self.usage.get(nid)

    # -- lookups -----------------------------------------------------------------------
    def network_id(self, network: UUID, now_us: int, *, create: bool = True) -> int | None:
        """The network's integer id, created (at `now_us`) if it is new and `create`;
        None if it does not exist and not `create`."""
        nid = self.networks.get(network)
        if nid is not None:
            return nid
        db = self.db
        key = db.uuid_in(network)
        row = db.execute("SELECT id FROM networks WHERE uuid = ?", (key,)).fetchone()
        if row is None:
            if not create:
                return None
            # The conflict arm: another PostgreSQL node created it since the SELECT.
            row = db.execute(
                "INSERT INTO networks (uuid, created_us) VALUES (?, ?) "
                "ON CONFLICT (uuid) DO UPDATE SET uuid = excluded.uuid RETURNING id",
                (key, now_us)).fetchone()
        self.networks[network] = nid = row[0]
        return nid

    def state_id(self, value: UUID, kind: int) -> int:
        """The id of `value`'s state of `kind` (REPORT ones cached). Raises UnknownValue."""
        if kind == REPORT:
            sid = self.report_states.get(value)
            if sid is not None:
                return sid
        db = self.db
        row = db.execute(
            "SELECT s.id, s.network_id, n.uuid FROM states s "
            "JOIN value_nodes v ON v.id = s.value_id JOIN networks n ON n.id = s.network_id "
            "WHERE v.uuid = ? AND s.kind = ?", (db.uuid_in(value), kind)).fetchone()
        if row is None:
            raise UnknownValue(f"no {'Report' if kind == REPORT else 'Control'} state for "
                               f"value {value}")
        sid, nid = row[0], row[1]
        self.state_networks[sid] = nid
        self.networks[db.uuid_out(row[2])] = nid
        if kind == REPORT:
            self.report_states[value] = sid
        return sid

    def apply_one(self, op: Any) -> Any:
        """Apply one operation that is not `Reports` (the batch's pending readings are
        written first): its result, or `Failed` if it refused its input."""
        self.flush_rows()
        try:
            return op.apply(self)
        except (StorageError, DeclarationRejected) as exc:
            return Failed(exc)

    def flush_rows(self) -> None:
        """Write the batch's pending readings (and add their bytes to `network_usage`)."""
        raise NotImplementedError

    def add_usage(self, per_network: dict[int, int]) -> None:
        """Add bytes to networks' `network_usage` rows (in the current transaction) and
        remember the totals in `usage`."""
        raise NotImplementedError

    # -- hooks of the shared operations ----------------------------------------------
    def lock_network(self, network_id: int) -> None:
        """Before a declaration changes the network's nodes: hold the network, so two
        declarations of it never interleave."""

    def prepare_reading(self, state_id: int, ts_us: int) -> None:
        """Before one reading is inserted outside the batch's readings (a command)."""

    def lock_network_states(self, network_id: int) -> None:
        """Before an erasure deletes the network: wait for every batch holding its states."""

    def network_erased(self) -> None:
        """After an erasure deleted a network (in this transaction)."""
        self.reset_caches()
