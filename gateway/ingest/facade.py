"""`Ingest`: the one object the gateway calls for a device's `model` and `report/...` publishes.

Theory of operation. For each PUBLISH a device sends inside its jail, the gateway calls

    replies = await ingest.handle(network_uuid, client_id, topic, payload, qos, now)

with the device-relative topic (the `<network-uuid>/` mount removed). `handle` returns when
what must be durable is committed (for QoS 1/2), and the gateway then sends PUBACK/PUBREC and
publishes each `Reply` into that network's jail (topic device-relative, qos, retain as given:
`model/accepted` is retained so a rebooted device finds its UUIDs). For QoS 0 it returns once
the reports are queued. Publishes on other topics return `[]` at once (`is_ingest_topic`
tells in advance); the gateway relays every publish, ingest's or not, like any broker.

Pipelining: a connection that must keep reading while earlier messages commit uses
`pending = await ingest.submit(...)` in its reader (waits only for queue room: backpressure)
and `await pending.wait()` in a task that sends the acknowledgements in order. Better still,
`submit_many(network, client_id, [(topic, payload, qos), ...], now)` takes every PUBLISH
decoded from one socket read as ONE store operation: per-operation overhead, not SQLite, is
what limits the writer (docs/benchmarks.md, "Store"). A `model` publish completes inside
`submit` (the reports behind it must see its UUIDs).

Errors: a `StorageError` out of `handle`/`submit`/`wait` means "not stored": do not
acknowledge; close the connection (the device will resend). Nothing else escapes for any
payload or topic; refusals are replies on `errors` and the publish IS acknowledged.

How the gateway uses it:
1. at start: `async with open_sqlite_store(data_dir) as store:` (the `--data` folder; one
   file `fleetgate.sqlite3`, 0600), then `ingest = Ingest(store)`; at start also
   `store.load_sessions()` and, per network, `store.retained(net)` to rebuild the broker;
2. on CONNECT accepted: `await store.connected(net, client_id, cert_serial, now)`; on close:
   `await store.disconnected(net, client_id, reason, now)` (reason: the disconnect reason
   token); at most every few seconds of traffic: `await store.seen(net, now)`;
3. on PUBLISH with `is_ingest_topic(topic)`: `handle` (or `submit`/`submit_many` + `wait`),
   then PUBACK/PUBREC, then publish the replies into the jail (retained ones through the
   broker's retained path, so they are stored too); relay the PUBLISH itself as usual;
4. MQTT state that must survive a restart: `store.set_retained` before acknowledging a
   retained PUBLISH; `save_session`/`delete_session` on clean-session-0 SUBSCRIBE/
   UNSUBSCRIBE/CONNECT; `enqueue` before acknowledging a QoS 1/2 message for an offline
   session, `dequeue` when its PUBACK/PUBCOMP arrives;
5. HTTP API: `ingest.control(value_uuid, data, now)` validates, stores the Control
   state and returns (network, retained QoS 1 `Reply`) to publish into that network's jail;
   `ingest.erase_network(net)` erases and forgets; reads are on `store` (`get_tree`,
   `latest_states`, `history`, `connection_status`, `list_networks`, ...).
"""

from __future__ import annotations

import json
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from ..model import DEFAULT_LIMITS, DeclarationRejected, Limits, parse_model
from ..model.tree import NetworkTree, ReportRow, StateKind, ValueNode
from .errors import ReadingRejected, RejectCode
from .readings import Reading, check_data, parse_readings
from .topics import (
    ERRORS,
    MODEL_ACCEPTED,
    MODEL_REJECTED,
    BadReportTopic,
    ModelTopic,
    ReportByName,
    Route,
    control_topic,
    route,
)

if TYPE_CHECKING:  # ingest stays free of storage (and trio) imports at run time
    from gateway.storage.interface import Store


@dataclass(frozen=True, slots=True)
class Reply:
    """A message for the gateway to publish into the device's jail."""

    topic: str  # device-relative
    payload: bytes
    qos: int
    retain: bool


def _json(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def model_accepted(tree: NetworkTree, declared: set[str]) -> list[Reply]:
    """The answers to an accepted declaration, each far below the packet size limit.

    One retained `model/accepted/<device>` per device the declaration named (its value and
    state UUIDs; at most ~120 KB at the largest names and value counts the limits allow),
    then the retained `model/accepted` summary (network and device UUIDs, every device of the
    network, ~80 KB at most), last, so a device that sees it has been sent its pieces.
    Devices the declaration left out are unchanged (declaring is additive): their retained
    pieces stand. The whole tree in one message reached 1 MB at 4,096 values.
    """
    replies = [Reply(f"{MODEL_ACCEPTED}/{d.name}", _json({"network": str(tree.uuid),
                                                          "device": d.uuids_json()}), 1, True)
               for d in tree.devices if d.name in declared]
    replies.append(Reply(MODEL_ACCEPTED, _json({"network": tree.summary_json()}), 1, True))
    return replies


def encode_timestamp(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class _Index:
    """One network's values by (device, value) name and by UUID, for validation."""

    __slots__ = ("by_name", "by_uuid", "names")

    def __init__(self, tree: NetworkTree | None) -> None:
        self.by_name: dict[tuple[str, str], ValueNode] = {}
        self.by_uuid: dict[UUID, ValueNode] = {}
        self.names: dict[UUID, tuple[str, str]] = {}
        for dev in tree.devices if tree else ():
            for v in dev.values:
                self.by_name[dev.name, v.name] = v
                self.by_uuid[v.uuid] = v
                self.names[v.uuid] = (dev.name, v.name)


class Pending:
    """What `submit` started: `await wait()` gives the replies once durable.

    `readings`: how many readings it queued for the store (the readings-rate budget);
    `verdicts`: per submitted message, in order, the refusal that kept all of it out of the
    store (its first one), or None: stored, partly stored, or not a report (the gateway
    answers an MQTT 5 refusal with a PUBACK reason code)."""

    __slots__ = ("_store", "_tickets", "replies", "readings", "verdicts")

    def __init__(self, store: Any, tickets: list[Any], replies: list[Reply],
                 readings: int = 0, verdicts: list[ReadingRejected | None] | None = None
                 ) -> None:
        self._store, self._tickets, self.replies = store, tickets, replies
        self.readings = readings
        self.verdicts: list[ReadingRejected | None] = verdicts if verdicts is not None else []

    @property
    def must_wait(self) -> bool:
        """False when nothing needs a commit before the acknowledgement (QoS 0, refusals)."""
        return bool(self._tickets)

    async def wait(self) -> list[Reply]:
        for ticket in self._tickets:
            await self._store.wait_committed(ticket)
        return self.replies


@dataclass(frozen=True, slots=True)
class IngestStatistics:
    models_accepted: int
    models_rejected: int
    reports_stored: int  # queued for the store (committed once their ticket is)
    rejected: dict[str, int]  # readings refused, by RejectCode


class Ingest:
    """Validates device publishes against their declarations and hands them to the store.

    Keeps an LRU cache of network trees (filled from the store's read side on first use,
    replaced on every accepted declaration); this process is the only writer of trees, so the
    cache cannot go stale. (Several gateway processes will need an invalidation signal.)
    """

    def __init__(self, store: Store, *, limits: Limits = DEFAULT_LIMITS,
                 cached_values: int = 100_000) -> None:
        self._store = store
        self._limits = limits
        self._cache: OrderedDict[UUID, _Index] = OrderedDict()
        self._cache_values = 0
        self._cache_cap = cached_values  # about 1 KiB each: the cache's memory bound
        self._accepted = 0
        self._model_rejected = 0
        self._stored = 0
        self._rejected: Counter[str] = Counter()

    def statistics(self) -> IngestStatistics:
        return IngestStatistics(self._accepted, self._model_rejected, self._stored,
                                dict(self._rejected))

    async def handle(self, network: UUID, client_id: str, topic: str, payload: bytes,
                     qos: int, now: datetime) -> list[Reply]:
        """Ingest one publish; return the replies once what must be durable is committed."""
        pending = await self.submit(network, client_id, topic, payload, qos, now)
        return await pending.wait()

    async def submit(self, network: UUID, client_id: str, topic: str, payload: bytes,
                     qos: int, now: datetime) -> Pending:
        """Validate and queue one publish; `Pending.wait()` completes it (see module doc)."""
        return await self.submit_many(network, client_id, ((topic, payload, qos),), now)

    async def submit_many(self, network: UUID, client_id: str,
                          messages: Sequence[tuple[str, bytes, int]], now: datetime
                          ) -> Pending:
        """Like `submit` for several publishes of one connection (e.g. all PUBLISH packets
        decoded from one socket read): their reports go to the store as ONE operation, which
        is what lets the writer take 100,000 reports/s (one-per-operation costs ~4x).

        `Pending.wait()` returns once all of them are durable, with every reply in order.
        """
        replies: list[Reply] = []
        tickets: list[Any] = []
        rows: list[ReportRow] = []
        must_wait = False
        index: _Index | None = None
        over_quota: bool | None = None  # asked once, at the first report
        queued = 0
        verdicts: list[ReadingRejected | None] = []
        for topic, payload, qos in messages:
            verdicts.append(None)
            where = route(topic)
            if where is None:
                continue
            if isinstance(where, ModelTopic):
                if rows:  # keep order: reports before the model are queued before it
                    tickets.append(await self._store.submit_reports(rows, network))
                    self._stored += len(rows)
                    queued += len(rows)
                    rows = []
                replies += await self._declare(network, payload, now)
                index = None
                continue
            if index is None:
                index = await self._index(network)
            if over_quota is None:
                over_quota = await self._over_quota(network)
            if over_quota:
                quota = ReadingRejected(
                    RejectCode.QUOTA, "this network's stored data reached its quota "
                    f"({self._limits.max_stored_bytes_per_network} bytes); readings are "
                    "not stored")
                verdicts[-1] = quota
                replies.append(self._refuse(topic, [(None, quota)]))
                continue
            before = len(rows)
            refused = self._validate(index, where, payload, now, rows)
            if refused:
                replies.append(self._refuse(topic, refused))
                if len(rows) == before:
                    verdicts[-1] = refused[0][1]
            if len(rows) > before and qos > 0:
                must_wait = True
        if rows:
            tickets.append(await self._store.submit_reports(rows, network))
            self._stored += len(rows)
            queued += len(rows)
        return Pending(self._store, tickets if must_wait else [], replies, queued, verdicts)

    async def _over_quota(self, network: UUID) -> bool:
        """Whether the network's stored bytes reached `max_stored_bytes_per_network`.

        Checked before queueing, so it may be passed by what was queued when it was reached
        (bounded by the writer's per-network queue); what is stored is never touched."""
        limit = self._limits.max_stored_bytes_per_network
        return limit > 0 and await self._store.stored_bytes(network) >= limit

    def _validate(self, index: _Index, where: Route, payload: bytes, now: datetime,
                  rows: list[ReportRow]) -> list[tuple[int | None, ReadingRejected]]:
        """Append the acceptable readings of one report to `rows`; return the refusals."""
        if isinstance(where, BadReportTopic):
            return [(None, ReadingRejected(
                RejectCode.UNKNOWN_TOPIC,
                "report topics are report/<device>/<value> or report/<value-uuid>"))]
        value = (index.by_name.get((where.device, where.value))
                 if isinstance(where, ReportByName) else index.by_uuid.get(where.value))
        if value is None:
            return [(None, ReadingRejected(
                RejectCode.UNKNOWN_VALUE,
                "no such value declared in this network; publish a model first"))]
        if not value.decl.permission.reportable:
            return [(None, ReadingRejected(
                RejectCode.PERMISSION,
                f"value {value.name!r} is write-only (permission w): devices do not report it"))]
        try:
            parsed = parse_readings(payload, self._limits)
        except ReadingRejected as exc:
            return [(None, exc)]
        refused: list[tuple[int | None, ReadingRejected]] = []
        for i, reading in enumerate(parsed.readings):
            try:
                if not isinstance(reading, Reading):
                    raise reading
                text = check_data(value.decl, reading.data)
            except ReadingRejected as exc:
                refused.append((i if parsed.batch else None, exc))
                continue
            rows.append(ReportRow(value.uuid, text, reading.timestamp or now, now))
        return refused

    def _refuse(self, topic: str, refused: list[tuple[int | None, ReadingRejected]]) -> Reply:
        items = []
        for index, exc in refused:
            self._rejected[str(exc.code)] += 1
            if len(items) < self._limits.max_errors_per_reply:
                item: dict[str, Any] = {"code": str(exc.code), "reason": exc.reason}
                if index is not None:
                    item["index"] = index
                items.append(item)
        doc: dict[str, Any] = {"topic": topic, "errors": items}
        if len(refused) > len(items):
            doc["more"] = len(refused) - len(items)
        return Reply(ERRORS, _json(doc), 1, False)

    async def _declare(self, network: UUID, payload: bytes, now: datetime) -> list[Reply]:
        try:
            model = parse_model(payload, self._limits)
            tree = await self._store.declare_model(network, model, now, self._limits)
        except DeclarationRejected as exc:
            self._model_rejected += 1
            return [Reply(MODEL_REJECTED, _json({"reasons": list(exc.reasons)}), 1, False)]
        self._accepted += 1
        self._remember(network, _Index(tree))
        return model_accepted(tree, {d.name for d in model.devices})

    async def _index(self, network: UUID) -> _Index:
        index = self._cache.get(network)
        if index is None:
            index = _Index(await self._store.get_tree(network))
            # a declaration may have landed while we read: keep the newer one
            index = self._cache.get(network) or index
            self._remember(network, index)
        else:
            self._cache.move_to_end(network)
        return index

    def _remember(self, network: UUID, index: _Index) -> None:
        self.forget(network)
        self._cache[network] = index
        self._cache_values += len(index.by_uuid)
        # Evict least recently used networks past the bound, but always keep this one.
        while self._cache_values > self._cache_cap and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cache_values -= len(old.by_uuid)

    def forget(self, network: UUID) -> None:
        """Drop a network's cached tree (`erase_network` does it for you)."""
        old = self._cache.pop(network, None)
        if old is not None:
            self._cache_values -= len(old.by_uuid)

    async def erase_network(self, network: UUID, audit: Any = None) -> bool:
        """Erase everything stored about `network` and forget its cached tree; `audit` (a
        `gateway.storage.audit.AuditRecord`) is committed with the erasure."""
        self.forget(network)
        erased = await self._store.erase_network(network, audit)
        self.forget(network)  # a report may have refilled the cache meanwhile
        return erased

    async def control(self, value: UUID, data: str | int | float, now: datetime
                      ) -> tuple[UUID, Reply]:
        """Validate and store a command for `value`; return (network, Reply to publish).

        Raises `ReadingRejected` (UNKNOWN_VALUE, PERMISSION, TYPE, RANGE, ...) when refused.
        """
        where = await self._store.find_value(value)
        if where is None:
            raise ReadingRejected(RejectCode.UNKNOWN_VALUE, f"no value {value}")
        node = where.value
        if not node.decl.permission.controllable or node.state(StateKind.CONTROL) is None:
            raise ReadingRejected(RejectCode.PERMISSION,
                                  f"value {node.name!r} is read-only (permission r)")
        if isinstance(data, bool) or not isinstance(data, str | int | float):
            raise ReadingRejected(RejectCode.TYPE, "data must be a string or a number")
        text = check_data(node.decl, data)
        record = await self._store.append_control(value, text, now)
        doc = {"data": text, "timestamp": encode_timestamp(record.timestamp),
               "value": str(value)}
        topic = control_topic(where.device_name, node.name)
        return where.network, Reply(topic, _json(doc), 1, True)
