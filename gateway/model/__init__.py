"""What a network declares and holds, shared by ingest and storage (both import it; it
imports neither): the declarations of a `model` message and their parser, the limits on
them, and the stored tree of a network (devices, values, states) with its report rows.

Pure: no I/O, no trio, socket, ssl or sqlite.
"""

from .declarations import (
    BlobType,
    DeviceDecl,
    ModelDecl,
    NumberType,
    Permission,
    StringType,
    ValueDecl,
    ValueType,
    XmlType,
    parse_model,
    value_decl_from_json,
)
from .errors import DeclarationRejected, ModelError
from .limits import DEFAULT_LIMITS, Limits
from .tree import DeviceNode, NetworkTree, ReportRow, StateKind, StateNode, ValueNode

__all__ = [
    "DEFAULT_LIMITS", "BlobType", "DeclarationRejected", "DeviceDecl", "DeviceNode", "Limits",
    "ModelDecl", "ModelError", "NetworkTree", "NumberType", "Permission", "ReportRow",
    "StateKind", "StateNode", "StringType", "ValueDecl", "ValueNode", "ValueType", "XmlType",
    "parse_model", "value_decl_from_json",
]
