"""What a `ServerConnection` tells the application (MQTT 3.1.1 and 5.0, chapters 3 and 4).

`ServerConnection.next_event()` returns one of these frozen values, or None when it needs
more bytes. Everything the session answers by itself (PINGRESP, PUBREL, PUBCOMP, the
CONNACK of a refused client identifier) never becomes an event; everything that needs an
application decision does, and the application answers with the matching method:

| event                 | the application answers with                         |
|-----------------------|------------------------------------------------------|
| `ConnectReceived`     | `accept(...)` or `refuse(code)`, before `next_event` |
| `PublishReceived`     | QoS 1/2: `acknowledge(packet_id)` once it is durable |
| `SubscribeReceived`   | `grant(packet_id, return_codes)`                     |
| `UnsubscribeReceived` | `unsubscribed(packet_id)`                            |
| `DeliveryComplete`    | nothing (drop the message from its outbound queue)   |
| `Disconnected`        | publish the will if `publish_will`; close the socket |

MQTT 5 adds no event: its properties ride on the packets the events carry (`Connect`,
`Will`, `Publish` each have `.properties`) and on the events' own `properties` fields,
and the answers take reason codes and reason strings as keyword arguments. The server's
own DISCONNECT is `ServerConnection.disconnect(reason)`.

It also hands out two values: `ProtocolSessionState` (what a persistent session keeps across
connections) and `ConnectionStatistics` (queue sizes).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._state import ConnectionState
from .packets import Connect, Publish, PubRel, QoS, SubscriptionOptions
from .properties import NO_PROPERTIES, Properties


@dataclass(frozen=True, slots=True)
class ConnectReceived:
    """A CONNECT arrived and passed the session's own checks (section 3.1).

    Already enforced before this event is emitted: it is the first packet (MQTT-3.1.0-1),
    protocol name and level (by the codec, CONNACK 0x01 for an unknown level), and the
    client-identifier policy: an empty id with clean_session=0 (MQTT-3.1.3-8) or one longer
    than `max_client_id_length` UTF-8 bytes (MQTT-3.1.3-9) was answered with CONNACK 0x02
    and raised `RemoteProtocolError` instead of emitting this.

    An empty `connect.client_id` (clean_session=1) is allowed (MQTT-3.1.3-6): the
    application must give that session a unique identifier of its own (MQTT-3.1.3-7 says
    such a session must not be persistent, which clean_session=1 already guarantees).
    Authentication (certificate, username/password) is the application's: it answers with
    `accept()` or `refuse(code)`.

    MQTT 5 (`connect.protocol_level == 5`): an empty client id is allowed with either
    Clean Start; the application passes the identifier it assigns to
    `accept(assigned_client_id=...)` (MQTT-3.2.2-16). A CONNECT with an Authentication
    Method was already refused with CONNACK 0x8C (no enhanced authentication here).
    `connect.properties` holds session expiry interval, receive maximum, maximum packet
    size, topic alias maximum, request problem/response information and user properties
    (the session itself honours the limits); `connect.will.properties` the will delay
    interval and the will message's properties.
    """

    connect: Connect


@dataclass(frozen=True, slots=True)
class PublishReceived:
    """An application message from the client (section 3.3).

    QoS 1 and 2: the application calls `acknowledge(publish.packet_id)` once the message
    is stored or routed, not before (durability). QoS 2: emitted once per packet identifier
    until the client's PUBREL: a re-sent PUBLISH with the same identifier is answered by
    the session and not emitted again (MQTT-4.3.3-2). QoS 1 re-sends are emitted again
    (at least once, section 4.3.2). The topic name is already validated (no wildcards).

    MQTT 5: a topic alias is already resolved (`publish.topic` is the full name and
    `publish.properties.topic_alias` is None); the other properties (message expiry,
    payload format indicator, content type, response topic, correlation data, user
    properties) are the client's, as sent.
    """

    publish: Publish


@dataclass(frozen=True, slots=True)
class SubscribeReceived:
    """A SUBSCRIBE (section 3.8); filters are validated (section 4.7), at least one.

    The application answers `grant(packet_id, return_codes)` with one return code per
    filter, in order (MQTT-3.8.4-5): the granted QoS (at most the requested one) or
    `SUBACK_FAILURE` (0x80).

    MQTT 5: `options` holds one `SubscriptionOptions` per filter (empty: all defaults, as
    in 3.1.1; see `Subscribe.options_of`); `subscription_identifier` the identifier to
    attach to messages delivered through these subscriptions (or None); `properties` the
    user properties. Shared subscriptions (`$share/{name}/{filter}`) keep their full
    filter here: their syntax is checked; no local on one was refused (protocol error).
    `grant` takes MQTT 5 reason codes (`reason_codes.SubAckCode`).
    """

    packet_id: int
    subscriptions: tuple[tuple[str, QoS], ...]
    options: tuple[SubscriptionOptions, ...] = ()
    subscription_identifier: int | None = None
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class UnsubscribeReceived:
    """An UNSUBSCRIBE (section 3.10), at least one validated filter.

    The application removes the subscriptions, then answers `unsubscribed(packet_id)`
    (UNSUBACK, MQTT-3.10.4-4), even when a filter matched nothing (MQTT-3.10.4-5).
    """

    packet_id: int
    topic_filters: tuple[str, ...]
    properties: Properties = NO_PROPERTIES  # MQTT 5 user properties


@dataclass(frozen=True, slots=True)
class DeliveryComplete:
    """An outbound QoS 1 message got its PUBACK, or a QoS 2 one its PUBCOMP (4.3.2, 4.3.3).

    The message left the server's responsibility: the application may forget it. Its
    packet identifier is free again, and one more slot of the inflight window is open.

    MQTT 5: `reason_code` is the PUBACK's or PUBREC's reason (0x10 no matching
    subscribers, or >= 0x80 when the client refused the message: the flow ends there);
    `properties` its reason string and user properties.
    """

    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection ended from the client's side; the state is now CLOSED.

    `graceful=True`: a DISCONNECT packet arrived, so the will must be discarded without
    being published (MQTT-3.14.4-3). `graceful=False`: the byte stream ended (EOF) without
    DISCONNECT, so the will must be published (MQTT-3.1.2-8). Keepalive expiry and
    protocol errors do not produce this event: the application sees the deadline pass or
    the `RemoteProtocolError`, and publishes the will itself in those cases too.

    MQTT 5: `reason_code` is the client's DISCONNECT reason; 0x04 (disconnect with will
    message) is graceful yet asks for the will (`publish_will`). `properties` may hold a
    new session expiry interval (already checked: 0 at CONNECT cannot become non-zero,
    3.14.2.2.2), a reason string and user properties.
    """

    graceful: bool
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES

    @property
    def publish_will(self) -> bool:
        """Whether the will must be published (MQTT-3.1.2-8, MQTT 5 section 3.14.2.1)."""
        return not self.graceful or self.reason_code == 0x04


Event = (
    ConnectReceived
    | PublishReceived
    | SubscribeReceived
    | UnsubscribeReceived
    | DeliveryComplete
    | Disconnected
)


@dataclass(frozen=True, slots=True)
class ProtocolSessionState:
    """What a persistent session (clean_session=0) keeps across connections (4.1).

    Attributes:
        outbound: unfinished outbound QoS 1/2 messages in the order they were first sent:
            a `Publish` still awaiting PUBACK/PUBREC, or the `PubRel` of a QoS 2 message
            awaiting PUBCOMP. Resuming re-sends them all, PUBLISH with DUP=1 (4.4).
        inbound_awaiting_pubrel: inbound QoS 2 identifiers acknowledged (PUBREC) but not
            yet released; a re-sent PUBLISH with one of them is not delivered again.
        next_packet_id: where outbound identifier allocation continues.

    Subscriptions and queued messages are the application's to keep.
    """

    outbound: tuple[Publish | PubRel, ...] = ()
    inbound_awaiting_pubrel: frozenset[int] = frozenset()
    next_packet_id: int = 1


@dataclass(frozen=True, slots=True)
class ConnectionStatistics:
    """Queue sizes of one connection, for metrics and backpressure."""

    state: ConnectionState
    outbound_inflight: int
    inbound_unacknowledged: int
    inbound_awaiting_pubrel: int
    bytes_to_send: int
    dropped_too_large: int = 0
    """MQTT 5: outbound messages discarded as larger than the client's Maximum Packet
    Size (MQTT-3.1.2-25), since the connection began."""
