"""Requests and responses as the API core sees them: plain values, no sockets.

The server turns h11 events into a `Request` and a `Response` back into h11 events. A
`Response` carries either a whole `body` or a `stream` (an async iterator of byte chunks, sent
as HTTP/1.1 chunked `Data` events): large answers (history, export) are never built whole.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from .auth import Operator
from .errors import ApiError

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # percent-decoded, without the query
    query: Mapping[str, str]
    body: bytes = b""
    content_type: str | None = None
    operator: Operator | None = None
    refusal: ApiError | None = None  # why `operator` is None (401/403), for protected routes
    # For the console (cookies, Origin) and its per-address login limits; the API ignores them.
    headers: Mapping[str, str] = field(default_factory=dict)
    peer: str = ""

    @classmethod
    def from_target(cls, method: str, target: str, **kw: Any) -> Request:
        """Build from the request line's target ("/path?a=1").

        Raises:
            ApiError: 400 for a target that is not an absolute path, or a repeated parameter.
        """
        if not target.startswith("/"):
            raise ApiError(400, "bad_target", "the request target must be an absolute path")
        # Origin-form (RFC 9112 section 3.2.1): no urlsplit, which would read "//x/..." as
        # a host.
        raw_path, _, raw_query = target.partition("?")
        query: dict[str, str] = {}
        try:
            pairs = parse_qsl(raw_query, keep_blank_values=True, strict_parsing=False,
                              errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "bad_query", "the query string is not valid UTF-8") from None
        for key, value in pairs:
            if key in query:
                raise ApiError(400, "bad_query", f"parameter {key!r} given more than once")
            query[key] = value
        try:
            path = unquote(raw_path, errors="strict")
        except UnicodeDecodeError:
            raise ApiError(400, "bad_target", "the path is not valid UTF-8") from None
        return cls(method, path, query, **kw)

    def json(self) -> Any:
        """The body as JSON. Raises ApiError 400 bad_json / 415 for another content type."""
        if self.content_type is not None:
            media = self.content_type.split(";", 1)[0].strip().lower()
            if media != JSON and not media.endswith("+json"):
                raise ApiError(415, "unsupported_media_type", "send application/json")
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ApiError(400, "bad_json", "the body is not a JSON document") from None


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = field(default=None, compare=False)
    close: bool = False  # close the connection after this response
    signed_in: bool = False
    """The request carried a valid console session: from now on the connection counts as
    authenticated (it leaves the pool of unauthenticated ones, as an operator's does)."""


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(status: int, doc: Any, *, close: bool = False) -> Response:
    return Response(status, (("content-type", JSON),), dumps(doc), close=close)


def error_response(error: ApiError, *, close: bool = False) -> Response:
    headers: tuple[tuple[str, str], ...] = (("content-type", JSON),)
    if error.status == 401:
        headers += (("www-authenticate", 'Mutual realm="fleetgate operators"'),)
    body = dumps({"error": {"code": error.code, "message": error.message}})
    return Response(error.status, headers, body, close=close)


def stream_response(status: int, chunks: AsyncIterator[bytes]) -> Response:
    return Response(status, (("content-type", JSON),), stream=chunks)
