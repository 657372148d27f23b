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
    USE_ANOTHER_SERVER = "USE_ANOTHER_SERVER"
    """This gateway node is draining (a cluster): MQTT 5 clients are told where to go."""


class RefusalCause(StrEnum):
    """Why admission refused a TLS peer: the `cause` of a `refused` line (reason AUTH_ERROR)
    and the `reason` label of `handshakes_refused_total`. A closed set: the metric family is
    built from it."""

    HANDSHAKE_TIMEOUT = "HANDSHAKE_TIMEOUT"
    CONNECTION_LOST = "CONNECTION_LOST"
    """The peer closed during the TLS handshake."""
    NO_CERTIFICATE = "NO_CERTIFICATE"
    TLS_ERROR = "TLS_ERROR"
    """Another TLS failure (protocol version, cipher, garbage): the detail says which."""
    UNKNOWN_CA = "UNKNOWN_CA"
    SELF_SIGNED = "SELF_SIGNED"
    WRONG_PURPOSE = "WRONG_PURPOSE"
    CERT_INVALID = "CERT_INVALID"
    """Another OpenSSL verification failure: the detail says which."""
    CERT_NOT_YET_VALID = "CERT_NOT_YET_VALID"
    CERT_EXPIRED = "CERT_EXPIRED"
    CERT_REVOKED = "CERT_REVOKED"
    NO_CRL = "NO_CRL"
    CRL_NOT_YET_VALID = "CRL_NOT_YET_VALID"
    """The gateway's CRL: an operator problem, not the device's."""
    CRL_EXPIRED = "CRL_EXPIRED"
    """The gateway's CRL is past nextUpdate: run `fleet-ca crl`."""
    BAD_CERTIFICATE = "BAD_CERTIFICATE"
    CA_CERTIFICATE = "CA_CERTIFICATE"
    OPERATOR_CERTIFICATE = "OPERATOR_CERTIFICATE"
    SERVER_CERTIFICATE = "SERVER_CERTIFICATE"
    NOT_A_DEVICE = "NOT_A_DEVICE"
    BARRED = "BARRED"
    """The network was erased by an operator; its identity is barred."""


class ThrottleLimit(StrEnum):
    """The limit (its config option's name) that refused a connection or session: the `cause`
    of a `refused` or `disconnected` line with reason THROTTLED, and the `limit` label of
    `throttled_total`."""

    MAX_CONNECTIONS = "max_connections"
    CONNECTION_RATE_PER_SOURCE = "connection_rate_per_source"
    CONNECTION_RATE = "connection_rate"
    MAX_CONNECTIONS_PER_NETWORK = "max_connections_per_network"
    MAX_SESSIONS_PER_NETWORK = "max_sessions_per_network"
    MAX_CONNECTIONS_PER_CLAIM = "max_connections_per_claim"
