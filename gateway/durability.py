"""The durability handle: when a read's publishes may be acknowledged.

Theory of operation. A device's QoS 1/2 PUBLISH is acknowledged only once what it caused is
durable (MQTT-4.3.2-2, 4.3.3-2): its report's rows, committed by ingest's store, and the MQTT
state its routing changed (a retained message, copies queued for offline persistent
sessions), committed by the broker's journal (`gateway.persistence`). The two commits run in
the same group-commit writer but are separate operations, so a read's acknowledgement waits
for both, and for nothing else.

`Gateway.accept` hands one read's reports to ingest (`IngestPort.submit_many`) and returns ONE
`DurabilityHandle`: `await handle.wait()` returns ingest's replies once both commits are
done, and raises `StorageError` when either failed (the connection then closes without
acknowledging, so the device sends them again). When the read changed no durable MQTT state
the handle is ingest's own; otherwise a `JournaledBatch` adds the journal's position. A
gateway without a store has no handle at all: routed is acknowledged.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .persistence import Journal

__all__ = ["DurabilityHandle", "IngestPort", "JournaledBatch", "ReplyMessage"]


class ReplyMessage(Protocol):
    """A message ingest asks the gateway to publish into the device's jail."""

    topic: str  # device-relative
    payload: bytes
    qos: int
    retain: bool


class DurabilityHandle(Protocol):
    """One read's publishes, accepted. `wait()` returns ingest's replies once everything the
    read must make durable is (raises `StorageError` if it is not); `readings`: how many
    readings it queued (its network's readings rate counts them)."""

    readings: int
    verdicts: Sequence[object | None]
    """Per submitted report, in order: ingest's refusal of all of it, or None (an MQTT 5
    device gets it as its PUBACK's reason code, `device_session.ack_reason`)."""

    async def wait(self) -> Sequence[ReplyMessage]: ...


class IngestPort(Protocol):
    """Takes inbound application messages before they are acknowledged (`gateway.ingest`).

    `submit_many` gets the reports of one socket read (device-relative topics) and waits only
    for queue room (backpressure); its handle covers their commit.
    """

    async def submit_many(self, network: uuid.UUID, client_id: str,
                          messages: Sequence[tuple[str, bytes, int]],
                          now: datetime) -> DurabilityHandle: ...


class JournaledBatch:
    """A read's handle that also waits for the broker journal up to `mark`."""

    __slots__ = ("_pending", "_journal", "_mark", "readings", "verdicts")

    def __init__(self, pending: DurabilityHandle | None, journal: Journal, mark: int) -> None:
        self._pending, self._journal, self._mark = pending, journal, mark
        self.readings = pending.readings if pending is not None else 0
        self.verdicts = pending.verdicts if pending is not None else ()

    async def wait(self) -> Sequence[ReplyMessage]:
        replies = await self._pending.wait() if self._pending is not None else ()
        await self._journal.wait_durable(self._mark)
        return replies
