"""The HTTP API on h11: operators' view of the fleet, over HTTPS with mTLS.

- `Api` (api.py): the sans-IO-ish core, `await api.handle(Request) -> Response`;
- `ROUTES` (routes.py): the routing table; `openapi_document()` is built from it;
- `serve_http(address, tls, store, *, hooks, metrics, bars, limits, log, task_status)`
  (server.py): the trio/h11 listener;
- `http_tls(gateway.tls)`, `GatewayHooks(store=, ingest=, gateway=, bars=)` (wiring.py):
  what `fleet-gateway serve --http` passes in;
- `BarList` (bars.py): networks barred from connecting after erasure;
- `gateway_samples(...)`, `render(...)` (metrics.py): Prometheus text for /metrics.

docs/api.md has a curl example for every endpoint.
"""

from .api import Api, ControlOutcome, EraseOutcome, Hooks
from .auth import Operator, authenticate
from .bars import BARS_FILE, BarList
from .errors import ApiError, HttpApiError
from .messages import Request, Response
from .metrics import Sample, gateway_samples, render
from .openapi import openapi_document
from .routes import ROUTES, Route, match
from .server import HttpLimits, HttpStatistics, serve_http
from .wiring import GatewayHooks, http_tls

__all__ = [
    "BARS_FILE", "ROUTES", "Api", "ApiError", "BarList", "ControlOutcome", "EraseOutcome",
    "GatewayHooks", "Hooks", "HttpApiError", "HttpLimits", "HttpStatistics", "Operator",
    "Request", "Response", "Route", "Sample", "authenticate", "gateway_samples",
    "http_tls", "match", "openapi_document", "render", "serve_http",
]
