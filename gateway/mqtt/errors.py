"""The error tree of `gateway.mqtt` (shaped like h11's).

- `RemoteProtocolError`: the peer broke the protocol. It carries what the server must do
  about it: send a CONNACK with `connack_code` (only possible before CONNECT was accepted),
  or, in MQTT 5 once connected, a DISCONNECT with `reason_code` (0x81 malformed packet
  unless the site says otherwise: 0x82 protocol error, 0x93, 0x94, 0x95, ...), then close
  the network connection (section 4.8; MQTT 5 section 4.13). `rule` names the normative
  statement (e.g. "MQTT-3.1.0-1") when there is one, for logs and tests.
- `LocalProtocolError`: our own code misused the API (sent a packet the state forbids,
  used a packet identifier not in flight). A bug here, never the peer's doing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .packets import ConnectReturnCode

MALFORMED_PACKET = 0x81
PROTOCOL_ERROR = 0x82


class MQTTError(Exception):
    """Root of every error raised by `gateway.mqtt`."""


class LocalProtocolError(MQTTError):
    """We used the protocol core wrongly."""


class RemoteProtocolError(MQTTError):
    """The peer sent something the standard forbids; the connection must close."""

    def __init__(
        self,
        message: str,
        *,
        rule: str | None = None,
        connack_code: ConnectReturnCode | int | None = None,
        reason_code: int = MALFORMED_PACKET,
    ) -> None:
        super().__init__(message)
        self.rule = rule
        self.connack_code = connack_code
        self.reason_code = reason_code


class PacketTooLarge(RemoteProtocolError):
    """A fixed header announced more than the configured maximum packet size (MQTT 5:
    DISCONNECT 0x95)."""

    def __init__(self, message: str, *, rule: str | None = None) -> None:
        super().__init__(message, rule=rule, reason_code=0x95)


def protocol_error(message: str, *, rule: str | None = None,
                   reason_code: int = PROTOCOL_ERROR) -> RemoteProtocolError:
    """A `RemoteProtocolError` that MQTT 5 answers with DISCONNECT 0x82 (or `reason_code`)."""
    return RemoteProtocolError(message, rule=rule, reason_code=reason_code)
