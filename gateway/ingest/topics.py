"""The device's view of its jail: which topics ingest owns (docs/protocol.md, "Topics").

Topics here are device-relative: the gateway has already removed the `<network-uuid>/` mount.

| topic                          | direction        | handled by ingest            |
|--------------------------------|------------------|------------------------------|
| `model`                        | device -> gw     | declare devices and values   |
| `model/accepted`, `.../rejected` | gw -> device   | replies                      |
| `report/<device>/<value>`      | device -> gw     | a reading, by names          |
| `report/<value-uuid>`          | device -> gw     | a reading, by UUID           |
| `control/<device>/<value>`     | gw -> device     | commands (retained, QoS 1)   |
| `errors`                       | gw -> device     | why a publish was refused    |

Everything else is plain broker traffic: relayed inside the jail, never stored by ingest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from uuid import UUID

MODEL = "model"
MODEL_ACCEPTED = "model/accepted"
MODEL_REJECTED = "model/rejected"
ERRORS = "errors"
REPORT_PREFIX = "report/"
CONTROL_PREFIX = "control/"

_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


@dataclass(frozen=True, slots=True)
class ModelTopic:
    pass


@dataclass(frozen=True, slots=True)
class ReportByName:
    device: str
    value: str


@dataclass(frozen=True, slots=True)
class ReportByUuid:
    value: UUID


@dataclass(frozen=True, slots=True)
class BadReportTopic:
    """A `report/...` topic of no known shape: answered on `errors`, not stored."""


Route = ModelTopic | ReportByName | ReportByUuid | BadReportTopic


# A device reports on the same few topics over and over: classify each once. The routes are
# frozen values, so sharing them is safe; the bound keeps a topic-spraying device from
# growing the cache.
@lru_cache(maxsize=4096)
def route(topic: str) -> Route | None:
    """Classify a device-relative topic; None means plain broker traffic (not ingest's)."""
    if topic == MODEL:
        return ModelTopic()
    if not topic.startswith(REPORT_PREFIX):
        return None
    parts = topic[len(REPORT_PREFIX):].split("/")
    if len(parts) == 2 and parts[0] and parts[1]:
        return ReportByName(parts[0], parts[1])
    if len(parts) == 1 and _CANONICAL_UUID.match(parts[0]):
        return ReportByUuid(UUID(parts[0]))
    return BadReportTopic()


def is_ingest_topic(topic: str) -> bool:
    """True when a device publish on `topic` is ingest's to handle (the gateway's fast test)."""
    return topic == MODEL or topic.startswith(REPORT_PREFIX)


def control_topic(device: str, value: str) -> str:
    return f"{CONTROL_PREFIX}{device}/{value}"
