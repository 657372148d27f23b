"""What a connection sends next: its session outbox, then its new subscriptions' retained
messages, within the protocol core's inflight window (no I/O here).

The outbox (live messages routed to the session, and a resumed session's queue) goes first.
Retained messages of new subscriptions come from lazy streams, one per mounted filter
(`Broker.retained_for`), pulled one message at a time and only when the window takes it at
once: a retained message is never held, so never stale behind a newer live one of its topic,
and a SUBSCRIBE matching many costs what is sent, not a copied list.

MQTT 5: a message past its expiry is dropped here, never sent (MQTT-3.3.2-5); one still
valid goes with its remaining interval and its pass-through properties
(`gateway.delivery.outbound_props`). A message larger than the client's Maximum Packet Size
is discarded by the core as if delivered (MQTT-3.1.2-25). Either way `dropped` is told, so
a durable copy is forgotten. A 3.1.1 subscriber gets the message without properties.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from .broker_state import Message
from .delivery import outbound_props
from .jail import Jail
from .mqtt.packets import QoS
from .mqtt.session import ServerConnection

if TYPE_CHECKING:
    from .metrics import MqttMetrics

__all__ = ["Outbound"]


class Outbound:
    """The sending side of one connection's session (the connection owns the containers)."""

    __slots__ = ("conn", "outbox", "streams", "jail", "inflight", "metrics", "v5", "clock",
                 "dropped")

    def __init__(self, conn: ServerConnection, outbox: deque[Message],
                 streams: dict[str, tuple[Iterator[Message], QoS]], jail: Jail,
                 inflight: dict[int, Message], metrics: MqttMetrics, *, v5: bool = False,
                 clock: Callable[[], float] = time.time,
                 dropped: Callable[[Message, bool], None] | None = None) -> None:
        """`v5`: the subscriber speaks MQTT 5 (properties go out); `clock`: the wall clock
        (message expiry); `dropped(message, expired)`: told of each message that will never
        be sent (past its expiry, or too large for the client)."""
        self.conn = conn
        self.outbox = outbox
        self.streams = streams
        self.jail = jail
        self.inflight = inflight
        self.metrics = metrics
        self.v5 = v5
        self.clock = clock
        self.dropped = dropped

    def fill(self, limit: int) -> int:
        """Hand up to `limit` messages to the protocol core; return how many. Fewer than
        `limit`: nothing more can go now (window full, or nothing queued)."""
        conn, outbox, streams = self.conn, self.outbox, self.streams
        messages_out = self.metrics.messages_out
        sent = 0
        while sent < limit:
            if outbox:
                if not conn.can_publish(outbox[0].qos):
                    break
                message = outbox.popleft()
            elif streams:
                topic_filter, (stream, qos) = next(iter(streams.items()))
                if not conn.can_publish(qos):
                    break
                message = next(stream, None)
                if message is None:
                    del streams[topic_filter]
                    continue
                self.metrics.retained_out.inc()
            else:
                break
            topic = self.jail.unmount(message.topic)
            if message.expires_at is None and not self.v5:  # the 3.1.1 path, unchanged
                packet_id = conn.publish(topic, message.payload, message.qos, message.retain)
            else:
                now = self.clock()
                if message.expired(now):
                    if self.dropped is not None:
                        self.dropped(message, True)
                    continue
                if self.v5:
                    packet_id = conn.publish(topic, message.payload, message.qos,
                                             message.retain,
                                             properties=outbound_props(message, self.jail, now))
                else:
                    packet_id = conn.publish(topic, message.payload, message.qos,
                                             message.retain)
            if packet_id is not None:
                self.inflight[packet_id] = message
            elif message.qos and self.dropped is not None:  # too large for the client
                self.dropped(message, False)
            messages_out.inc(message.qos)
            sent += 1
        return sent
