"""The sans-IO session of one device, from its accepted CONNECT until it ends.

Theory of operation. The trio connection (`connection.py`) reads bytes and writes bytes; this
module decides. It imports no trio, ssl or socket, time is passed in, and whatever needs
waiting or I/O comes out as an action for the connection to carry out.

Phases are types. Admission yields an `Admitted` record (identity, jail, peer); the CONNECT
turns it into a `DeviceSession` (client id, session key, the broker's `SessionState`, the
protocol core) or a `Refusal` (`open_session`). The connection holds one phase object at a
time, so nothing asks whether a field is set yet.

A `DeviceSession` owns the jail, the `ServerConnection`, the in-flight messages (sent and not
yet acknowledged, kept for a persistent session's resume, MQTT-4.4.0-1) and the lazy retained
streams of new subscriptions (`outbound.Outbound` sends both). The connection feeds each read
to `receive_data` and calls `next_action()` until it returns None:

- A PUBLISH is mounted by the jail and routed at once (`SessionServices.route`); one the jail
  refuses is answered on the device's `errors` topic and acknowledged all the same (it must
  not come again). A CSR on `cert/renew` comes out as `Renew`.
- The publishes of one read come out as ONE `Submit`: the device-relative reports for ingest,
  the packet ids to acknowledge once durable (MQTT-4.3.2-2, 4.3.3-2), and the broker
  journal's position when the read changed durable MQTT state (retained messages, copies
  queued for offline sessions). The gateway turns it into one durability handle.
- A (UN)SUBSCRIBE is applied to the broker at once. When that changed durable state (a
  persistent session's subscriptions), `StoreWait` comes out first and the SUBACK/UNSUBACK is
  queued by the next `next_action()` call: answers keep their order and go out only once
  stored. A SUBACK queues the retained messages of its filters (MQTT-3.3.1-6).
- The end of the session (DISCONNECT, EOF, a protocol error): `Close`, after the read's
  `Submit`.
`end(outlet)` detaches from the broker: a persistent session keeps the protocol core's
unfinished flows and their messages, and the will comes back to be published unless the
client sent DISCONNECT (MQTT-3.1.2-8, 3.14.4-3).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from .broker import Attached, Broker, Message, Outlet
from .durability import ReplyMessage
from .errors import JailViolation
from .identity import DeviceIdentity
from .jail import ERRORS_TOPIC, RENEW, Jail
from .limits import ConnectionLimits
from .mqtt.errors import LocalProtocolError, PacketTooLarge, RemoteProtocolError
from .mqtt.events import (
    DeliveryComplete,
    Disconnected,
    PublishReceived,
    SubscribeReceived,
    UnsubscribeReceived,
)
from .mqtt.packets import Connect, ConnectReturnCode, Publish, QoS
from .mqtt.session import ServerConnection
from .outbound import Outbound
from .reasons import DisconnectReason, ThrottleLimit
from .subscriptions import examine

if TYPE_CHECKING:
    from .metrics import MqttMetrics

__all__ = ["Admitted", "Close", "DeviceSession", "Refusal", "Renew", "SessionAction",
           "SessionServices", "StoreWait", "Submit", "describe", "open_session"]


@dataclass(frozen=True, slots=True)
class Admitted:
    """A connection past admission, before its CONNECT: who it is and where it may go."""

    identity: DeviceIdentity
    jail: Jail
    peer: str


@dataclass(frozen=True, slots=True)
class SessionServices:
    """What every device session shares, built once per gateway."""

    broker: Broker
    limits: ConnectionLimits
    """Counts each network's sessions (`max_connections_per_network`)."""
    route: Callable[[Message], object]
    """Relays one mounted inbound message (`Gateway.route`: subscribers, retained)."""
    journal_mark: Callable[[], int]
    """The broker journal's position (`Journal.mark`; always 0 without a store)."""
    metrics: MqttMetrics
    max_filters_per_subscribe: int


class SessionLog(Protocol):
    """Where a session writes its lines (the connection's budgeted `ConnectionLog`)."""

    def emit(self, event: str, **fields: Any) -> object: ...


# -- actions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Submit:
    """One read's publishes: hand `reports` to ingest, acknowledge `acknowledge` once durable."""

    reports: list[tuple[str, bytes, int]]
    """(device-relative topic, payload, QoS) of each routed publish, in order."""
    acknowledge: list[int]
    """The packet ids of the read's QoS 1/2 publishes, in order (refused ones included)."""
    journal: int | None
    """The broker journal's position the acknowledgements wait for too; None when the read
    changed no durable MQTT state."""


@dataclass(frozen=True, slots=True)
class StoreWait:
    """Wait until the broker journal is committed up to `mark`, then call `next_action()`
    again: it answers the (UN)SUBSCRIBE that changed it."""

    mark: int


@dataclass(frozen=True, slots=True)
class Refusal:
    """The CONNECT is refused: answer CONNACK `code`, close for `reason`."""

    code: ConnectReturnCode
    reason: DisconnectReason
    detail: str


@dataclass(frozen=True, slots=True)
class Renew:
    """The device asked for a new certificate (`payload`: its CSR, `gateway.provisioning`)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """The session ends for `reason` (send what the core queued, then close)."""

    reason: DisconnectReason
    detail: str | None = None


SessionAction = Submit | StoreWait | Renew | Close


def open_session(admitted: Admitted, connect: Connect, client_id: str, conn: ServerConnection,
                 services: SessionServices, outlet: Outlet, log: SessionLog,
                 wake: Callable[[], None]) -> DeviceSession | Refusal:
    """Decide the `connect` that `conn` read, for `client_id`: the session, attached to the broker
    (taking over a live one of its key, MQTT-3.1.4-2), or why it is refused: a will topic
    outside the jail, its network at `max_connections_per_network` (a takeover still gets
    in: the session it replaces is about to go) or at `max_sessions_per_network`. The
    session counts against its network until `end()`; a refusal counts nothing."""
    metrics, network = services.metrics, admitted.identity.network
    if connect.will is not None:
        try:
            admitted.jail.mount_topic(connect.will.topic)
        except JailViolation as exc:
            return Refusal(ConnectReturnCode.NOT_AUTHORIZED, DisconnectReason.CLIENT_ERROR,
                           f"will topic: {exc}")
    key = (network, client_id)
    why = services.limits.open_network(network, force=services.broker.is_live(key))
    if why is not None:
        metrics.throttled.inc(why)
        return Refusal(ConnectReturnCode.SERVER_UNAVAILABLE, DisconnectReason.THROTTLED, why)
    attached = services.broker.connect(key, connect.clean_session, outlet)
    if attached is None:
        services.limits.close_network(network)
        metrics.throttled.inc(ThrottleLimit.MAX_SESSIONS_PER_NETWORK)
        return Refusal(ConnectReturnCode.SERVER_UNAVAILABLE, DisconnectReason.THROTTLED,
                       "max_sessions_per_network")
    return DeviceSession(admitted, client_id, attached, conn, services, log, wake)


def describe(exc: RemoteProtocolError) -> str:
    """The log detail of a protocol error: the limit or the spec rule it broke."""
    if isinstance(exc, PacketTooLarge):
        return f"max_packet_size: {exc}"
    return f"{exc.rule}: {exc}" if exc.rule else str(exc)


class DeviceSession:
    """One attached device session: protocol events in, actions out (no I/O).

    Built by `open_session` once the broker attached it; `accept()` then answers the
    CONNECT. Until then `end()` leaves the broker's session state as it found it.
    """

    __slots__ = ("identity", "jail", "peer", "client_id", "key", "state", "session_present",
                 "replaced", "conn", "graceful", "published", "named", "_services", "_log", "_wake",
                 "_inflight", "_retained", "_outbound", "_accepted", "_reports",
                 "_acks", "_mark", "_answer", "_closing")

    def __init__(self, admitted: Admitted, client_id: str, attached: Attached,
                 conn: ServerConnection, services: SessionServices, log: SessionLog,
                 wake: Callable[[], None]) -> None:
        """`conn`: the protocol core that read the CONNECT; `wake`: tells the connection's
        writer there is something to send; `log`: this connection's log."""
        self.identity = admitted.identity
        self.jail = admitted.jail
        self.peer = admitted.peer
        self.client_id = client_id
        self.key = attached.state.key
        self.state = attached.state
        self.session_present = attached.session_present
        # The live connection this one took over, until the CONNECT is answered.
        self.replaced: Outlet | None = attached.replaced
        self.conn = conn
        self.graceful = False  # the client sent DISCONNECT: no will
        self.published = 0  # PUBLISH packets handled since the last receive_data
        self.named = 0  # topic filters the (UN)SUBSCRIBEs since then named
        self._services = services
        self._log = log
        self._wake = wake
        self._inflight: dict[int, Message] = {}
        # Retained messages of new subscriptions by mounted filter, pulled lazily by the
        # writer: at most one stream per subscription (<= max_subscriptions_per_session).
        self._retained: dict[str, tuple[Iterator[Message], QoS]] = {}
        self._outbound = Outbound(conn, attached.state.outbox, self._retained, self.jail,
                                  self._inflight, services.metrics)
        self._accepted = False
        self._reports: list[tuple[str, bytes, int]] = []
        self._acks: list[int] = []
        self._mark = services.journal_mark()
        self._answer: Callable[[], None] | None = None
        self._closing: Close | None = None

    @property
    def _ids(self) -> dict[str, str]:
        """Who a log line is about (built per line: lines are rare, sessions many)."""
        return {"network": self.identity.network, "client_id": self.client_id}

    @property
    def keepalive(self) -> int:
        connect = self.conn.connect
        return connect.keepalive if connect is not None else 0

    def accept(self) -> None:
        """Answer the CONNECT: CONNACK 0 with session_present, then a resumed session's
        unfinished flows, re-sent with their packet ids (MQTT-4.4.0-1)."""
        state = self.state
        resume = state.protocol_state if self.session_present else None
        if resume is not None:
            self._inflight.update(state.inflight)
        state.protocol_state = None
        state.inflight = {}
        self.conn.accept(session_present=self.session_present, resume=resume)
        self._accepted = True
        self.replaced = None

    # -- reading ------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed one read (`b""`: the peer closed its side); `now`: a monotonic clock."""
        self.conn.receive_data(data, now)
        self.published = self.named = 0
        self._mark = self._services.journal_mark()

    def next_action(self) -> SessionAction | None:
        """The next thing the connection must do for what was read; None: read more."""
        if self._closing is not None:
            closing, self._closing = self._closing, None
            return closing
        if self._answer is not None:  # its StoreWait is over: answer now, in order
            answer, self._answer = self._answer, None
            answer()
        conn = self.conn
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                self._services.metrics.protocol_errors.inc()
                return self._end_read(Close(DisconnectReason.CLIENT_ERROR, describe(exc)))
            if event is None:
                return self._end_read(None)
            kind = type(event)
            if kind is PublishReceived:
                renew = self._on_publish(event.publish)
                if renew is not None:
                    return renew
            elif kind is SubscribeReceived:
                self.named += len(event.subscriptions)
                wait = self._once_stored(self._on_subscribe, event)
                if wait is not None:
                    return wait
            elif kind is UnsubscribeReceived:
                self.named += len(event.topic_filters)
                wait = self._once_stored(self._on_unsubscribe, event)
                if wait is not None:
                    return wait
            elif kind is DeliveryComplete:
                delivered = self._inflight.pop(event.packet_id, None)
                if delivered is not None:
                    self._services.broker.acknowledged(self.state, delivered)
                self._wake()
            elif kind is Disconnected:
                self.graceful = event.graceful
                return self._end_read(Close(DisconnectReason.CLIENT_DISCONNECT)
                                      if event.graceful else
                                      Close(DisconnectReason.CONNECTION_LOST, "peer closed"))

    def _end_read(self, closing: Close | None) -> SessionAction | None:
        """The read's `Submit` first, if it had publishes; then `closing`."""
        if not self._reports and not self._acks:
            return closing
        mark = self._services.journal_mark()
        submit = Submit(self._reports, self._acks, mark if mark != self._mark else None)
        self._reports, self._acks = [], []
        self._closing = closing
        return submit

    def _on_publish(self, publish: Publish) -> Renew | None:
        """Route one PUBLISH (or refuse it) and add it to the read's batch."""
        self.published += 1
        if publish.qos:
            self._acks.append(publish.packet_id)  # type: ignore[arg-type]
        topic = publish.topic
        if topic == RENEW:  # a CSR for the signer, not a message (provisioning.py)
            return Renew(publish.payload)
        try:
            mounted = self.jail.mount_topic(topic)
        except JailViolation as exc:
            self._services.metrics.publishes_denied.inc()
            self._log.emit("publish_denied", **self._ids, serial=self.identity.serial,
                           topic=topic, reason=exc.why)
            note = json.dumps({"error": "publish_denied", "topic": topic,
                               "reason": exc.why}).encode()
            self._services.broker.publish(Message(self.jail.mount_topic(ERRORS_TOPIC), note))
            return None  # acknowledged all the same: it must not come again
        self._services.route(Message(mounted, publish.payload, publish.qos, publish.retain))
        self._reports.append((topic, publish.payload, int(publish.qos)))
        return None

    def _once_stored(self, handle: Callable[[Any], Callable[[], None]],
                     event: object) -> StoreWait | None:
        """Apply a (UN)SUBSCRIBE; answer it now, or after a StoreWait when it changed a
        persistent session's stored subscriptions (subscriptions are rare: the reader may
        wait one commit for them)."""
        before = self._services.journal_mark()
        answer = handle(event)
        after = self._services.journal_mark()
        if after == before:
            answer()
            return None
        self._answer = answer
        return StoreWait(after)

    def _on_subscribe(self, event: SubscribeReceived) -> Callable[[], None]:
        """Subscribe in the broker; return what sends the SUBACK and then queues the
        retained messages (MQTT-3.3.1-6) as lazy streams for the writer."""
        services = self._services
        request = examine(event.subscriptions, self.jail, services.max_filters_per_subscribe)
        streams = request.apply(services.broker, self.state)
        request.count(services.metrics)

        def answer() -> None:
            self.conn.grant(event.packet_id, request.codes())
            for mounted, stream, qos in streams:
                # Subscribing again restarts the filter's stream (MQTT-3.8.4-3 re-sends).
                self._retained.pop(mounted, None)
                self._retained[mounted] = (stream, qos)
            request.log(self._log, self._ids, self.identity.serial)
            self._wake()

        return answer

    def _on_unsubscribe(self, event: UnsubscribeReceived) -> Callable[[], None]:
        for topic_filter in event.topic_filters:
            if not topic_filter.startswith("$"):
                mounted = self.jail.mount_filter(topic_filter)
                self._services.broker.unsubscribe(self.state, mounted)
                self._retained.pop(mounted, None)  # no new messages for it (MQTT-3.10.4-2)
        return partial(self.conn.unsubscribed, event.packet_id)

    def readings_throttled(self, seconds: float, log: bool) -> None:
        """Count a pause of `seconds` its network's readings rate asked for; log it if `log`."""
        self._services.metrics.readings_throttled.inc()
        if log:
            self._log.emit("readings_throttled", **self._ids, serial=self.identity.serial,
                           limit="max_readings_per_second_per_network",
                           delay=round(seconds, 3))

    # -- acknowledging and sending ------------------------------------------------------

    def durable(self, acknowledge: Sequence[int], replies: Iterable[ReplyMessage] = ()) -> None:
        """A `Submit` is durable: acknowledge its packet ids, in order (MQTT-4.3.2-2,
        4.3.3-2), and publish ingest's replies into the jail."""
        conn = self.conn
        for packet_id in acknowledge:
            conn.acknowledge(packet_id)
        for reply in replies:
            self._services.broker.publish(Message(self.jail.mount_topic(reply.topic),
                                                  reply.payload, QoS(reply.qos), reply.retain))

    def fill(self, limit: int) -> int:
        """Hand up to `limit` queued messages to the protocol core (`Outbound.fill`)."""
        return self._outbound.fill(limit)

    # -- the end ------------------------------------------------------------------------

    def end(self, outlet: Outlet) -> Message | None:
        """Detach `outlet` from the broker's session; return the will to publish (mounted),
        or None when the client sent DISCONNECT or set no will."""
        will = None
        connect = self.conn.connect
        if not self.graceful and connect is not None and connect.will is not None:
            try:
                will = Message(self.jail.mount_topic(connect.will.topic), connect.will.payload,
                               QoS(connect.will.qos), connect.will.retain)
            except JailViolation:
                pass  # refused at CONNECT already; never routed
        if self._accepted and not self.state.clean:
            # Messages handed to the protocol core but not acknowledged are part of its
            # session_state(); the broker keeps them for the resume (MQTT-4.4.0-1).
            self.state.protocol_state = self.conn.session_state()
            self.state.inflight = dict(self._inflight)
        try:
            self.conn.close()
        except LocalProtocolError:
            pass
        self._services.broker.disconnect(self.key, outlet)
        self._services.limits.close_network(self.identity.network)
        return will
