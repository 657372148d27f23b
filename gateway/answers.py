"""What the gateway tells an MQTT 5 device in reason codes and CONNACK properties (no I/O).

Theory of operation (MQTT 5.0 sections 2.4, 3.2.2.3, 3.4.2.1, 3.14.2.1). MQTT 3.1.1 lets a
server only acknowledge or drop; MQTT 5 lets it say why. This module holds the gateway's
side of those answers as pure functions, so `device_session` decides and the tests read them
without sockets:

- `granted_expiry`: the session expiry interval a CONNECT asked for, capped by
  `max_session_expiry` ("never", 0xFFFFFFFF, is capped too: no session is kept forever);
- `granted_keepalive`: the keep alive, capped by `max_keepalive` (0, "no keep alive", too);
  the CONNACK's Server Keep Alive then tells the client;
- `CONNACK_FEATURES`: what the gateway offers (retained messages, wildcards, subscription
  identifiers, shared subscriptions: all available);
- `ack_reason`: a report ingest refused, as a PUBACK/PUBREC reason and a reason string
  naming the rule: 0x99 payload format invalid (not the documented shape, bad XML), 0x83
  implementation specific error (a type, range, step, size or unknown value), 0x87 not
  authorized (a read-only value, a `$`-topic), 0x97 quota exceeded (the stored-bytes quota);
- `disconnect_reason`: why the gateway closes a session, as a DISCONNECT reason: 0x8E session
  taken over, 0x98 administrative action (revoked, erased, barred), 0x8D keep alive timeout,
  0x96 message rate too high (a limit the device outran), 0x8B server shutting down, 0x9C use
  another server (a draining cluster node, with its server reference).
"""

from __future__ import annotations

from .mqtt.properties import Properties, make_properties
from .reasons import DisconnectReason

__all__ = ["CONNACK_FEATURES", "PAYLOAD_FORMAT_INVALID", "NOT_AUTHORIZED",
           "IMPLEMENTATION_SPECIFIC_ERROR", "QUOTA_EXCEEDED", "ack_reason",
           "disconnect_reason", "granted_expiry", "granted_keepalive"]

NEVER = 0xFFFF_FFFF
"""A session expiry interval that never ends (MQTT 5 section 3.1.2.11.2)."""

IMPLEMENTATION_SPECIFIC_ERROR = 0x83
NOT_AUTHORIZED = 0x87
QUOTA_EXCEEDED = 0x97
PAYLOAD_FORMAT_INVALID = 0x99

CONNACK_FEATURES: Properties = make_properties(
    retain_available=1, wildcard_subscription_available=1,
    subscription_identifier_available=1, shared_subscription_available=1)
"""What every MQTT 5 CONNACK announces beside the session's own limits."""

# RejectCode (gateway.ingest.errors) -> PUBACK reason; ingest stays free of MQTT.
_REJECT_REASON = {
    "MALFORMED": PAYLOAD_FORMAT_INVALID,
    "XML": PAYLOAD_FORMAT_INVALID,
    "PERMISSION": NOT_AUTHORIZED,
    "QUOTA": QUOTA_EXCEEDED,
}

_DISCONNECT = {
    DisconnectReason.DUPLICATE_CLIENTID: 0x8E,
    DisconnectReason.REVOKED: 0x98,
    DisconnectReason.ERASED: 0x98,
    DisconnectReason.KEEP_ALIVE_TIMEOUT: 0x8D,
    DisconnectReason.THROTTLED: 0x96,
    DisconnectReason.SERVER_SHUTDOWN: 0x8B,
    DisconnectReason.USE_ANOTHER_SERVER: 0x9C,
}


def granted_expiry(asked: int | None, maximum: int) -> int:
    """The session expiry interval granted for `asked` (None: absent, 0)."""
    asked = asked or 0
    return maximum if asked == NEVER else min(asked, maximum)


def granted_keepalive(asked: int, maximum: int) -> int | None:
    """The Server Keep Alive to announce, or None to keep the client's (`maximum` 0: no cap)."""
    if maximum and (asked == 0 or asked > maximum):
        return maximum
    return None


def ack_reason(code: str, reason: str) -> tuple[int, str]:
    """The PUBACK reason and reason string for an ingest refusal (`RejectCode` `code`)."""
    return _REJECT_REASON.get(code, IMPLEMENTATION_SPECIFIC_ERROR), f"{code}: {reason}"


def disconnect_reason(reason: DisconnectReason) -> int | None:
    """The DISCONNECT reason the gateway sends an MQTT 5 client for closing it for `reason`,
    or None: nothing to send (the client left, the stream broke, a protocol error the core
    answers itself)."""
    return _DISCONNECT.get(reason)
