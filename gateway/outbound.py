"""What a connection sends next: its session outbox, then its new subscriptions' retained
messages, within the protocol core's inflight window (no I/O here).

The outbox (live messages routed to the session, and a resumed session's queue) goes first.
Retained messages of new subscriptions come from lazy streams, one per mounted filter
(`Broker.retained_for`), pulled one message at a time and only when the window takes it at
once: a retained message is never held, so never stale behind a newer live one of its topic,
and a SUBSCRIBE matching many costs what is sent, not a copied list.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .broker import Message
from .jail import Jail
from .mqtt.packets import QoS
from .mqtt.session import ServerConnection

if TYPE_CHECKING:
    from .metrics import MqttMetrics

__all__ = ["Outbound"]


class Outbound:
    """The sending side of one connection's session (the connection owns the containers)."""

    __slots__ = ("conn", "outbox", "streams", "jail", "inflight", "metrics")

    def __init__(self, conn: ServerConnection, outbox: deque[Message],
                 streams: dict[str, tuple[Iterator[Message], QoS]], jail: Jail,
                 inflight: dict[int, Message], metrics: MqttMetrics) -> None:
        self.conn = conn
        self.outbox = outbox
        self.streams = streams
        self.jail = jail
        self.inflight = inflight
        self.metrics = metrics

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
            packet_id = conn.publish(
                self.jail.unmount(message.topic), message.payload, message.qos, message.retain
            )
            if packet_id is not None:
                self.inflight[packet_id] = message
            messages_out.inc(message.qos)
            sent += 1
        return sent
