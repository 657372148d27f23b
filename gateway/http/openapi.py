"""The OpenAPI 3.1 document, built from the routing table so the two cannot drift apart.

Each route's operation gets its parameters and response schemas from `_OPERATIONS`, keyed by
endpoint name; a test checks that every route is documented and every documented operation
is routed. Security: mutual TLS (an operator certificate) on every route but /healthz.
"""

from __future__ import annotations

from typing import Any

from .routes import ROUTES

_ERROR = {"$ref": "#/components/schemas/Error"}
_UUID = {"type": "string", "format": "uuid"}
_DATA = {"description": "typed by the value's declaration: a number, a string, or "
                        "{\"base64\": ...} for a blob",
         "oneOf": [{"type": "number"}, {"type": "string"},
                   {"type": "object", "required": ["base64"],
                    "properties": {"base64": {"type": "string"}}}]}
_TIME = {"type": ["string", "null"], "format": "date-time"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


_LIMIT = {"type": "integer", "minimum": 1}
_CURSOR = {"type": "string", "maxLength": 512}

_STATUS = {
    "type": "object",
    "required": ["uuid", "status"],
    "properties": {
        "uuid": _UUID, "status": {"enum": ["online", "offline"]},
        "connections": {"type": "integer"}, "connected_since": _TIME, "last_seen": _TIME,
        "cert_serial": {"type": ["string", "null"]}, "cert_not_after": _TIME,
        "client_id": {"type": ["string", "null"]},
        "disconnect_reason": {"type": ["string", "null"]},
    },
}

_OPERATIONS: dict[str, dict[str, Any]] = {
    "healthz": {"security": [], "responses": {"200": _json(
        {"type": "object", "properties": {"status": {"const": "ok"}}})}},
    "metrics": {"responses": {"200": {
        "description": "Prometheus text format 0.0.4",
        "content": {"text/plain": {"schema": {"type": "string"}}}}}},
    "openapi": {"responses": {"200": _json({"type": "object"})}},
    "list_networks": {
        "parameters": [
            _query("status", {"enum": ["online", "offline"]}, "only networks in this state"),
            _query("limit", {**_LIMIT, "maximum": 1000, "default": 100}, "page size"),
            _query("cursor", _CURSOR, "next_cursor of the previous page"),
        ],
        "responses": {"200": _json({"type": "object", "required": ["networks", "next_cursor"],
                                    "properties": {"networks": {"type": "array",
                                                                "items": _STATUS},
                                                   "next_cursor": {"type": ["string", "null"]}}})},
    },
    "get_network": {"responses": {"200": _json({"type": "object", "required": ["network"]})}},
    "erase_network": {"responses": {"200": _json({
        "type": "object", "required": ["network", "erased", "barred", "next_step"],
        "properties": {"network": _UUID, "erased": {"const": True}, "barred": {"type": "boolean"},
                       "sessions_closed": {"type": "integer"},
                       "next_step": {"type": "string"}}})}},
    "export_network": {"responses": {"200": _json({
        "type": "object",
        "required": ["format", "network", "tree", "states", "connections",
                     "certificate_serials", "retained", "sessions"]},
        "the whole network, streamed (chunked)")}},
    "get_device": {"responses": {"200": _json({"type": "object", "required": ["device"]})}},
    "get_value": {"responses": {"200": _json({"type": "object", "required": ["value"]})}},
    "value_reports": {
        "parameters": [
            _query("since", {"type": "string", "format": "date-time"}, "from (inclusive)"),
            _query("until", {"type": "string", "format": "date-time"}, "to (exclusive)"),
            _query("limit", {**_LIMIT, "maximum": 100_000, "default": 100}, "rows"),
            _query("order", {"enum": ["newest", "oldest"], "default": "newest"},
                   "newest or oldest first"),
            _query("cursor", _CURSOR, "next_cursor of the previous page"),
        ],
        "responses": {"200": _json({
            "type": "object", "required": ["value", "reports", "next_cursor"],
            "properties": {"value": _UUID, "reports": {"type": "array", "items": {
                "type": "object", "properties": {
                    "type": {"const": "Report"}, "data": _DATA,
                    "timestamp": {"type": "string"}, "received": {"type": "string"}}}},
                "next_cursor": {"type": ["string", "null"]}}}, "streamed (chunked)")},
    },
    "control_value": {
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["data"], "additionalProperties": False,
            "properties": {"data": {"type": ["string", "number"]},
                           "correlation_id": {"type": "string", "maxLength": 128}}}}}},
        "responses": {
            "200": _json({"type": "object", "required": ["value", "device_online", "state"],
                          "properties": {"device_online": {"type": "boolean"}}}),
            "409": _json(_ERROR, "the value is read-only (permission r)"),
            "415": _json(_ERROR, "not application/json"),
            "422": _json(_ERROR, "data fails the value's type, range, step or size"),
        },
    },
    "control_answer": {
        "parameters": [{"name": "correlation_id", "in": "query", "required": True,
                        "schema": {"type": "string", "maxLength": 128}}],
        "responses": {"200": _json({"type": "object", "required": [
            "correlation_id", "value", "sent", "response"], "properties": {
                "response": {"type": ["object", "null"]}}})},
    },
    "list_bars": {"responses": {"200": _json({"type": "object", "required": ["barred"]})}},
    "lift_bar": {"responses": {"200": _json({"type": "object"})}},
}


def openapi_document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        op = dict(_OPERATIONS[route.endpoint])
        op = {"operationId": route.endpoint, "summary": route.summary, **op}
        params = [{"name": seg[1:-1], "in": "path", "required": True, "schema": _UUID}
                  for seg in route.segments if seg.startswith("{")]
        op["parameters"] = params + list(op.get("parameters", []))
        responses = dict(op["responses"])
        responses.setdefault("400", _json(_ERROR, "bad request"))
        if route.operator_only:
            responses.setdefault("401", _json(_ERROR, "no client certificate"))
            responses.setdefault("403", _json(_ERROR, "not an operator certificate"))
        if params:
            responses.setdefault("404", _json(_ERROR, "no such resource"))
        op["responses"] = responses
        paths.setdefault(route.template, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "fleetgate gateway API", "version": "1",
                 "description": "Operators' view of the fleet; see docs/api.md."},
        "servers": [{"url": "https://127.0.0.1:8443"}],
        "security": [{"operatorCertificate": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"operatorCertificate": {
                "type": "mutualTLS",
                "description": "a certificate from `fleet-ca issue operator`"}},
            "schemas": {"Error": {
                "type": "object", "required": ["error"],
                "properties": {"error": {"type": "object", "required": ["code", "message"],
                                         "properties": {"code": {"type": "string"},
                                                        "message": {"type": "string"}}}}}},
        },
    }
