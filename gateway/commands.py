"""Request/response for control commands (MQTT 5 section 4.10), without I/O.

Theory of operation. A control command sent through the HTTP API with a `correlation_id`
goes to the device's jail with two MQTT 5 properties: the response topic `RESPONSE_TOPIC`
(inside the jail, like every topic) and the correlation id as correlation data. An MQTT 5
device answers by publishing to that response topic with the same correlation data; the
gateway sees every inbound message at one seam (`Gateway.route`) and hands the ones on a
response topic to `Commands.answer`, which ties the answer to its command. The API reads a
command back with its answer (`GET /api/v1/commands/{correlation_id}`). A 3.1.1 device
gets the command without properties and never answers: its command stays unanswered.

Limits: at most `per_network` commands are remembered per network (the oldest forgotten
first) and each for `keep` seconds; lookups cost one dict access. Commands live in memory:
a restart forgets them (the command itself, retained, is still in the store).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime

__all__ = ["RESPONSE_TOPIC", "Command", "Commands"]

RESPONSE_TOPIC = "control/response"
"""The device-relative topic a device answers correlated commands on."""

MAX_CORRELATION_ID = 128
"""Characters of a correlation id (the API refuses longer)."""


@dataclass(frozen=True, slots=True)
class Command:
    """One correlated command and, once the device answered, its answer."""

    correlation_id: str
    network: str
    value: str
    topic: str  # device-relative control topic
    sent: datetime
    response: bytes | None = None
    responded: datetime | None = None
    content_type: str | None = None


@dataclass(slots=True)
class Commands:
    """Correlated commands by correlation id (the operator's, unique across networks: a
    newer command with the same id replaces the older one)."""

    per_network: int = 100
    keep: float = 3600.0
    answered: int = 0
    forgotten: int = 0
    _by_id: dict[str, Command] = field(default_factory=dict)
    _by_network: dict[str, OrderedDict[str, None]] = field(default_factory=dict)

    def expect(self, command: Command) -> None:
        """Remember `command`; past `per_network` commands its network's oldest goes."""
        self._drop(command.correlation_id)
        self._by_id[command.correlation_id] = command
        held = self._by_network.setdefault(command.network, OrderedDict())
        held[command.correlation_id] = None
        while len(held) > self.per_network:
            oldest, _ = held.popitem(last=False)
            del self._by_id[oldest]
            self.forgotten += 1

    def waiting(self, network: str) -> bool:
        """Whether `network` has commands an answer could be for."""
        return network in self._by_network

    def answer(self, network: str, correlation: bytes, payload: bytes, at: datetime,
               content_type: str | None = None) -> Command | None:
        """Tie a device's answer to its command; None: no such command in `network`."""
        try:
            key = correlation.decode("utf-8")
        except UnicodeDecodeError:
            return None
        command = self._by_id.get(key)
        if command is None or command.network != network:
            return None
        self._by_id[key] = done = replace(command, response=payload, responded=at,
                                          content_type=content_type)
        self.answered += 1
        return done

    def get(self, correlation_id: str, now: datetime) -> Command | None:
        """The command `correlation_id`, unless older than `keep` seconds (forgotten)."""
        command = self._by_id.get(correlation_id)
        if command is not None and (now - command.sent).total_seconds() > self.keep:
            self._drop(correlation_id)
            self.forgotten += 1
            return None
        return command

    def _drop(self, correlation_id: str) -> None:
        command = self._by_id.pop(correlation_id, None)
        if command is None:
            return
        held = self._by_network[command.network]
        del held[correlation_id]
        if not held:
            del self._by_network[command.network]
