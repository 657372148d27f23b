"""The HTTP API's error tree: every refusal is an `ApiError` that becomes an error document.

`ApiError(status, code, message)` is raised by routing, authentication and the endpoint
functions; the server turns it into `{"error": {"code": ..., "message": ...}}` with `status`.
`code` is a stable lower-case token clients may branch on; `message` is for people.
"""

from __future__ import annotations

from gateway.errors import GatewayError


class HttpApiError(GatewayError):
    """Root of the errors of `gateway.http`."""


class ApiError(HttpApiError):
    """A request the API refuses, with the HTTP status and the error document's fields."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def bad_request(message: str, code: str = "bad_request") -> ApiError:
    return ApiError(400, code, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)
