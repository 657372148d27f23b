"""The device protocol inside the jail: declarations, readings, replies (docs/protocol.md).

Pure and sans-IO except `Ingest`, whose async methods await only the store it is given: this
package imports no trio, socket, ssl or sqlite module (a test proves it).

- `parse_model(payload) -> ModelDecl` / `DeclarationRejected(reasons)` (from `gateway.model`,
  re-exported here: the declarations, limits and tree live there, shared with storage);
- `parse_readings(payload) -> ParsedReport`, `check_data(decl, data) -> str` /
  `ReadingRejected(code, reason)`;
- `route(topic)`, `is_ingest_topic(topic)`: which device-relative topics are ingest's;
- `Ingest(store).handle(network, client_id, topic, payload, qos, now) -> list[Reply]`.
"""

from ..model import (
    DEFAULT_LIMITS,
    DeclarationRejected,
    DeviceNode,
    Limits,
    NetworkTree,
    ReportRow,
    StateKind,
    StateNode,
    ValueNode,
)
from ..model.declarations import (
    BlobType,
    DeviceDecl,
    ModelDecl,
    NumberType,
    Permission,
    StringType,
    ValueDecl,
    XmlType,
    parse_model,
)
from .errors import IngestError, ReadingRejected, RejectCode
from .facade import Ingest, IngestStatistics, Pending, Reply, encode_timestamp
from .readings import ParsedReport, Reading, check_data, parse_readings, parse_timestamp
from .topics import is_ingest_topic, route

__all__ = [
    "DEFAULT_LIMITS", "BlobType", "DeclarationRejected", "DeviceDecl", "DeviceNode", "Ingest",
    "IngestError", "IngestStatistics", "Limits", "ModelDecl", "NetworkTree", "NumberType",
    "ParsedReport", "Pending", "Permission", "Reading", "ReadingRejected", "RejectCode",
    "Reply", "ReportRow", "StateKind", "StateNode", "StringType", "ValueDecl", "ValueNode",
    "XmlType", "check_data", "encode_timestamp", "is_ingest_topic", "parse_model",
    "parse_readings", "parse_timestamp", "route",
]
