"""The error tree of `gateway.mqtt` (shaped like h11's).

- `RemoteProtocolError`: the peer broke the protocol. It carries what the server must do
  about it: send a CONNACK with `connack_code` (only possible before CONNECT was accepted),
  then close the network connection (section 4.8). `rule` names the normative statement
  (e.g. "MQTT-3.1.0-1") when there is one, for logs and tests.
- `LocalProtocolError`: our own code misused the API (sent a packet the state forbids,
  used a packet identifier not in flight). A bug here, never the peer's doing.
"""

from __future__ import annotations

from .packets import ConnectReturnCode


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
        connack_code: ConnectReturnCode | None = None,
    ) -> None:
        super().__init__(message)
        self.rule = rule
        self.connack_code = connack_code


class PacketTooLarge(RemoteProtocolError):
    """A fixed header announced more than the configured maximum packet size."""
