"""Why the gateway closed a connection: the stable tokens logs, metrics and tests use."""

from __future__ import annotations

from enum import StrEnum


class DisconnectReason(StrEnum):
    AUTH_ERROR = "AUTH_ERROR"
    """TLS handshake failed or the certificate opens no jail (detail says which)."""
    CLIENT_ERROR = "CLIENT_ERROR"
    """The client broke the protocol, sent an oversized packet, or missed the CONNECT deadline."""
    CLIENT_DISCONNECT = "CLIENT_DISCONNECT"
    """The client sent DISCONNECT: a normal close, the will is discarded."""
    CONNECTION_LOST = "CONNECTION_LOST"
    """The TCP/TLS stream broke or closed without DISCONNECT."""
    DUPLICATE_CLIENTID = "DUPLICATE_CLIENTID"
    """Another connection took the session over (MQTT 3.1.1 section 3.1.4-2)."""
    KEEP_ALIVE_TIMEOUT = "KEEP_ALIVE_TIMEOUT"
    """Nothing received for keepalive x keepalive_factor seconds."""
    THROTTLED = "THROTTLED"
    """A connection or queue limit was reached (detail names the limit)."""
    REVOKED = "REVOKED"
    """The certificate was revoked while the session was live."""
    ERASED = "ERASED"
    """An operator erased the network's data (HTTP API); its identity is barred."""
    SERVER_SHUTDOWN = "SERVER_SHUTDOWN"
    """The gateway is stopping."""
