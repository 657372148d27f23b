"""The routing table: (method, path template) -> endpoint name, and whether it needs an operator.

The table is the single source for dispatch (`match`) and for the OpenAPI document's paths
(a test checks both ways). Templates use `{name}` segments; every `{...}` here is a UUID.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from .errors import ApiError


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    template: str
    endpoint: str  # the Api method that answers it
    operator_only: bool = True
    summary: str = ""

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.template.strip("/").split("/"))


ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", "healthz", False, "Liveness: answers without a certificate"),
    Route("GET", "/metrics", "metrics", True, "Prometheus text exposition of the gateway"),
    Route("GET", "/api/v1/openapi.json", "openapi", True, "This API's OpenAPI 3.1 document"),
    Route("GET", "/api/v1/networks", "list_networks", True,
          "Networks with connection status, filtered by status, paginated"),
    Route("GET", "/api/v1/networks/{uuid}", "get_network", True,
          "A network's whole tree with the latest state of every value"),
    Route("DELETE", "/api/v1/networks/{uuid}", "erase_network", True,
          "Erase everything stored about a network and bar its identity"),
    Route("GET", "/api/v1/networks/{uuid}/export", "export_network", True,
          "Everything stored about one network as one streamed JSON document"),
    Route("GET", "/api/v1/devices/{uuid}", "get_device", True, "One device and its values"),
    Route("GET", "/api/v1/values/{uuid}", "get_value", True,
          "One value with the latest Report and Control states"),
    Route("GET", "/api/v1/values/{uuid}/reports", "value_reports", True,
          "A value's history, paginated with a cursor, streamed"),
    Route("POST", "/api/v1/values/{uuid}/control", "control_value", True,
          "Send a command to a device: stored as a Control state, published retained"),
    Route("GET", "/api/v1/values/{uuid}/control", "control_answer", True,
          "A command sent with a correlation_id and the device's MQTT 5 answer"),
    Route("GET", "/api/v1/bars", "list_bars", True, "Networks barred from connecting"),
    Route("DELETE", "/api/v1/bars/{uuid}", "lift_bar", True,
          "Lift the bar on a network (it may connect again if its certificate is valid)"),
)


def match(method: str, path: str) -> tuple[Route, dict[str, UUID]]:
    """The route for a request, and its path parameters.

    Raises:
        ApiError: 404 no such path (or a malformed UUID in it), 405 path known, method not.
    """
    parts = tuple(path.strip("/").split("/")) if path != "/" else ("",)
    if path != "/" and (path.endswith("/") or "//" in path):
        raise ApiError(404, "not_found", f"no endpoint {path}")
    allowed: list[str] = []
    for route in ROUTES:
        params = _bind(route.segments, parts)
        if params is None:
            continue
        if route.method == method:
            return route, _uuids(params)
        allowed.append(route.method)
    if allowed:
        raise ApiError(405, "method_not_allowed",
                       f"{method} not allowed here; allowed: {', '.join(sorted(set(allowed)))}")
    raise ApiError(404, "not_found", f"no endpoint {path}")


def _bind(template: tuple[str, ...], parts: tuple[str, ...]) -> dict[str, str] | None:
    if len(template) != len(parts):
        return None
    params: dict[str, str] = {}
    for want, got in zip(template, parts, strict=True):
        if want.startswith("{") and want.endswith("}"):
            params[want[1:-1]] = got
        elif want != got:
            return None
    return params


def _uuids(params: dict[str, str]) -> dict[str, UUID]:
    out = {}
    for name, text in params.items():
        try:
            value = UUID(text)
        except ValueError:
            raise ApiError(404, "not_found", f"{text!r} is not a UUID") from None
        if str(value) != text.lower():
            raise ApiError(404, "not_found", f"{text!r} is not a canonical UUID")
        out[name] = value
    return out
