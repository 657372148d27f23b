"""The error tree of the gateway service (everything outside `gateway.mqtt`).

- `ConfigError`: a bad or missing configuration value or file; the CLI prints one line and
  exits with `EXIT_CONFIG`.
- `AdmissionRefused`: a peer certificate that opens no jail (operator, server, malformed);
  `reason` is a `RefusalCause`, the stable token for logs and metrics.
- `JailViolation`: a topic that would leave the device's namespace (`$`-topics, escapes).
- `ConnectionEnds`: one device connection must close for a `DisconnectReason`; raised inside
  a connection's tasks, it never leaves them.

The packages' own trees hang below `GatewayError` too: `gateway.storage.StorageError`,
`gateway.ingest.IngestError`, `gateway.http.errors.HttpApiError` and
`gateway.accounts.AccountError`. The sans-IO `gateway.mqtt` keeps its own root, `MQTTError`,
so that it imports nothing from the service around it.
"""

from __future__ import annotations

from .reasons import DisconnectReason, RefusalCause


class GatewayError(Exception):
    """Root of every error raised by the gateway service."""


class ConfigError(GatewayError):
    """The configuration cannot be used (bad value, unreadable file, missing certificate)."""


class AdmissionRefused(GatewayError):
    """A TLS peer refused: its handshake failed, or its certificate opens no jail. `alert`:
    the TLS alert OpenSSL wrote when it refused the handshake, still to be sent."""

    def __init__(self, reason: RefusalCause, detail: str, *, alert: bytes = b"") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.alert = alert


class JailViolation(GatewayError):
    """A topic name or filter that is not allowed inside a network's jail."""

    def __init__(self, topic: str, why: str) -> None:
        super().__init__(f"{why}: {topic!r}")
        self.topic = topic
        self.why = why


class ConnectionEnds(GatewayError):
    """Ends one connection's loop with `reason` (and a `detail` for the log line)."""

    def __init__(self, reason: DisconnectReason, detail: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
