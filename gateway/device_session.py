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

MQTT 5 (the CONNECT's protocol level 5; 3.1.1 sessions take none of these paths): the
session expiry interval decides persistence (0: the session ends with the connection; N: the
broker keeps it N seconds, capped by `max_session_expiry`); the CONNACK carries what the
gateway granted and offers (`gateway.answers`); PUBLISH properties pass through to MQTT 5
subscribers (the response topic mounted in the jail) with the message's expiry; a refused
PUBLISH is acknowledged with a reason code and a reason string (0x87 for the jail, 0x99 for
a payload that is not the UTF-8 its format indicator says, ingest's refusals through
`reasons_for`); SUBSCRIBE options, identifiers and shared subscriptions go to the broker;
the will waits its delay interval (`will_delay`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .answers import (
    CONNACK_FEATURES,
    NOT_AUTHORIZED,
    PAYLOAD_FORMAT_INVALID,
    QUOTA_EXCEEDED,
    ack_reason,
    granted_expiry,
    granted_keepalive,
)
from .broker import Attached, Broker
from .broker_state import Message, Outlet
from .delivery import inbound_props
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
from .mqtt.packets import PROTOCOL_LEVEL_5, Connect, ConnectReturnCode, Publish, QoS
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
    max_session_expiry: int = 7 * 24 * 3600
    """MQTT 5: the longest session expiry interval granted (seconds)."""
    max_keepalive: int = 3600
    """MQTT 5: the longest keep alive granted (0: no cap)."""
    clock: Callable[[], float] = time.time
    """The wall clock in epoch seconds (message expiry)."""


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
    reported: tuple[int | None, ...] = ()
    """MQTT 5: the packet id (None: QoS 0) of each entry of `reports`, to tie ingest's
    verdicts to acknowledgements (`DeviceSession.reasons_for`); empty for 3.1.1."""
    refusals: Mapping[int, tuple[int, str]] = field(default_factory=dict)
    """MQTT 5: packet id -> (PUBACK reason, reason string) of publishes the session refused."""


@dataclass(frozen=True, slots=True)
class StoreWait:
    """Wait until the broker journal is committed up to `mark`, then call `next_action()`
    again: it answers the (UN)SUBSCRIBE that changed it."""

    mark: int


@dataclass(frozen=True, slots=True)
class Refusal:
    """The CONNECT is refused: answer CONNACK `code` (a 3.1.1 return code, or an MQTT 5
    reason the core translates for a 3.1.1 client), close for `reason`."""

    code: int
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
    v5 = connect.protocol_level == PROTOCOL_LEVEL_5
    if connect.will is not None:
        try:
            admitted.jail.mount_topic(connect.will.topic)
            if v5:
                inbound_props(connect.will.properties, admitted.jail)
        except JailViolation as exc:
            return Refusal(ConnectReturnCode.NOT_AUTHORIZED, DisconnectReason.CLIENT_ERROR,
                           f"will topic: {exc}")
    busy = QUOTA_EXCEEDED if v5 else ConnectReturnCode.SERVER_UNAVAILABLE
    key = (network, client_id)
    why = services.limits.open_network(network, force=services.broker.is_live(key))
    if why is not None:
        metrics.throttled.inc(why)
        return Refusal(busy, DisconnectReason.THROTTLED, why)
    expiry = None
    if v5:
        asked = connect.properties.session_expiry_interval or 0
        expiry = granted_expiry(asked, services.max_session_expiry)
        if expiry != asked:
            metrics.session_expiry_capped.inc()
    attached = services.broker.connect(key, connect.clean_session, outlet, expiry=expiry)
    if attached is None:
        services.limits.close_network(network)
        metrics.throttled.inc(ThrottleLimit.MAX_SESSIONS_PER_NETWORK)
        return Refusal(busy, DisconnectReason.THROTTLED, "max_sessions_per_network")
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
                 "replaced", "conn", "graceful", "published", "named", "v5", "keepalive",
                 "disconnect_expiry", "_services", "_log", "_wake",
                 "_inflight", "_retained", "_outbound", "_accepted", "_reports",
                 "_acks", "_mark", "_answer", "_closing", "_reported", "_refusals")

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
        connect = conn.connect
        self.v5 = connect is not None and connect.protocol_level == PROTOCOL_LEVEL_5
        # The keep alive in force: the client's, or the one the CONNACK grants (MQTT 5).
        self.keepalive = connect.keepalive if connect is not None else 0
        self.disconnect_expiry: int | None = None  # MQTT 5: set by the client's DISCONNECT
        self._inflight: dict[int, Message] = {}
        # Retained messages of new subscriptions by mounted filter, pulled lazily by the
        # writer: at most one stream per subscription (<= max_subscriptions_per_session).
        self._retained: dict[str, tuple[Iterator[Message], QoS]] = {}
        self._outbound = Outbound(conn, attached.state.outbox, self._retained, self.jail,
                                  self._inflight, services.metrics, v5=self.v5,
                                  clock=services.clock, dropped=self._dropped)
        self._reported: list[int | None] = []
        self._refusals: dict[int, tuple[int, str]] = {}
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

    def accept(self) -> None:
        """Answer the CONNECT: CONNACK 0 with session_present, then a resumed session's
        unfinished flows, re-sent with their packet ids (MQTT-4.4.0-1). MQTT 5: the CONNACK
        also carries the assigned client id (an empty one was given ours), the keep alive
        and session expiry granted when they differ from the asked ones, and what the
        gateway offers (`gateway.answers.CONNACK_FEATURES`)."""
        state = self.state
        resume = state.protocol_state if self.session_present else None
        if resume is not None:
            self._inflight.update(state.inflight)
        state.protocol_state = None
        state.inflight = {}
        connect = self.conn.connect
        if self.v5 and connect is not None:
            services = self._services
            server_keep_alive = granted_keepalive(connect.keepalive, services.max_keepalive)
            if server_keep_alive is not None:
                self.keepalive = server_keep_alive
            asked = connect.properties.session_expiry_interval or 0
            granted = state.expiry or 0
            self.conn.accept(
                session_present=self.session_present, resume=resume,
                assigned_client_id=None if connect.client_id else self.client_id,
                server_keep_alive=server_keep_alive,
                session_expiry_interval=granted if granted != asked else None,
                properties=CONNACK_FEATURES)
        else:
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
                self.graceful = not event.publish_will
                asked = event.properties.session_expiry_interval if self.v5 else None
                if asked is not None:  # the core refused 0 -> N (MQTT-3.14.2-2)
                    self.disconnect_expiry = granted_expiry(
                        asked, self._services.max_session_expiry)
                return self._end_read(Close(DisconnectReason.CLIENT_DISCONNECT)
                                      if event.graceful else
                                      Close(DisconnectReason.CONNECTION_LOST, "peer closed"))

    def _end_read(self, closing: Close | None) -> SessionAction | None:
        """The read's `Submit` first, if it had publishes; then `closing`."""
        if not self._reports and not self._acks:
            return closing
        mark = self._services.journal_mark()
        if self.v5:
            submit = Submit(self._reports, self._acks, mark if mark != self._mark else None,
                            tuple(self._reported), self._refusals)
            self._reported, self._refusals = [], {}
        else:
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
            props, expires_at = None, None
            if self.v5 and publish.properties:
                props = inbound_props(publish.properties, self.jail)
                interval = publish.properties.message_expiry_interval
                if interval is not None:
                    expires_at = self._services.clock() + interval
        except JailViolation as exc:
            self._services.metrics.publishes_denied.inc()
            self._log.emit("publish_denied", **self._ids, serial=self.identity.serial,
                           topic=topic, reason=exc.why)
            note = json.dumps({"error": "publish_denied", "topic": topic,
                               "reason": exc.why}).encode()
            self._services.broker.publish(Message(self.jail.mount_topic(ERRORS_TOPIC), note))
            self._refuse(publish, NOT_AUTHORIZED, f"publish_denied: {exc.why}")
            return None  # acknowledged all the same: it must not come again
        if props is not None and props.payload_format_indicator == 1:
            try:
                publish.payload.decode("utf-8")
            except UnicodeDecodeError:  # MQTT 5 section 3.3.2.3.2: the receiver may check
                self._refuse(publish, PAYLOAD_FORMAT_INVALID,
                             "payload_format_indicator: the payload is not UTF-8")
                return None
        self._services.route(Message(mounted, publish.payload, publish.qos, publish.retain,
                                     props=props, expires_at=expires_at, origin=self.key))
        self._reports.append((topic, publish.payload, int(publish.qos)))
        if self.v5:
            self._reported.append(publish.packet_id)
        return None

    def _refuse(self, publish: Publish, reason: int, text: str) -> None:
        """MQTT 5: acknowledge `publish` with a refusal `reason` and `text` (3.1.1: the plain
        acknowledgement, as before)."""
        if self.v5 and publish.qos:
            self._refusals[publish.packet_id] = (reason, text)  # type: ignore[index]

    def reasons_for(self, submit: Submit, verdicts: Sequence[Any]
                    ) -> dict[int, tuple[int, str]]:
        """MQTT 5: packet id -> (PUBACK reason, reason string) for the refused publishes of
        `submit`: the session's own refusals, and ingest's `verdicts` (one per report,
        `ReadingRejected` or None) mapped by `gateway.answers.ack_reason`."""
        if not self.v5:
            return {}
        reasons = dict(submit.refusals)
        for packet_id, verdict in zip(submit.reported, verdicts, strict=False):
            if packet_id is not None and verdict is not None:
                reasons[packet_id] = ack_reason(str(verdict.code), verdict.reason)
        return reasons

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
        if self.v5:
            request = examine(event.subscriptions, self.jail, services.max_filters_per_subscribe,
                              event.options, event.subscription_identifier or 0, v5=True)
        else:
            request = examine(event.subscriptions, self.jail,
                              services.max_filters_per_subscribe)
        streams = request.apply(services.broker, self.state)
        request.count(services.metrics)

        def answer() -> None:
            self.conn.grant(event.packet_id, request.codes(self.v5))
            for mounted, stream, qos in streams:
                # Subscribing again restarts the filter's stream (MQTT-3.8.4-3 re-sends).
                self._retained.pop(mounted, None)
                self._retained[mounted] = (stream, qos)
            request.log(self._log, self._ids, self.identity.serial)
            self._wake()

        return answer

    def _on_unsubscribe(self, event: UnsubscribeReceived) -> Callable[[], None]:
        codes: list[int] = []  # MQTT 5: 0x00 removed, 0x11 none existed, 0x87 the jail's
        for topic_filter in event.topic_filters:
            try:
                mounted = self.jail.mount_filter(topic_filter, shared=self.v5)
            except JailViolation:
                codes.append(NOT_AUTHORIZED)
                continue
            codes.append(0x00 if mounted in self.state.subscriptions else 0x11)
            self._services.broker.unsubscribe(self.state, mounted)
            self._retained.pop(mounted, None)  # no new messages for it (MQTT-3.10.4-2)
        if self.v5:
            return lambda: self.conn.unsubscribed(event.packet_id, codes)
        return lambda: self.conn.unsubscribed(event.packet_id)

    def readings_throttled(self, seconds: float, log: bool) -> None:
        """Count a pause of `seconds` its network's readings rate asked for; log it if `log`."""
        self._services.metrics.readings_throttled.inc()
        if log:
            self._log.emit("readings_throttled", **self._ids, serial=self.identity.serial,
                           limit="max_readings_per_second_per_network",
                           delay=round(seconds, 3))

    # -- acknowledging and sending ------------------------------------------------------

    def durable(self, acknowledge: Sequence[int], replies: Iterable[ReplyMessage] = (),
                reasons: Mapping[int, tuple[int, str]] | None = None) -> None:
        """A `Submit` is durable: acknowledge its packet ids, in order (MQTT-4.3.2-2,
        4.3.3-2), and publish ingest's replies into the jail. `reasons` (MQTT 5, from
        `reasons_for`): the refused ones' reason codes and strings."""
        conn = self.conn
        for packet_id in acknowledge:
            refused = reasons.get(packet_id) if reasons else None
            if refused is None:
                conn.acknowledge(packet_id)
            else:
                conn.acknowledge(packet_id, refused[0], reason_string=refused[1])
        for reply in replies:
            self._services.broker.publish(Message(self.jail.mount_topic(reply.topic),
                                                  reply.payload, QoS(reply.qos), reply.retain))

    def fill(self, limit: int) -> int:
        """Hand up to `limit` queued messages to the protocol core (`Outbound.fill`)."""
        return self._outbound.fill(limit)

    def _dropped(self, message: Message, expired: bool) -> None:
        """A queued message will never be sent (past its MQTT 5 expiry, or larger than the
        client's maximum packet size): forget a durable copy."""
        if expired:
            self._services.metrics.messages_expired.inc()
            self._services.broker.expired += 1
        self._services.broker.acknowledged(self.state, message)

    # -- the end ------------------------------------------------------------------------

    @property
    def will_delay(self) -> int:
        """MQTT 5 will delay interval in seconds (0: publish the will at once)."""
        connect = self.conn.connect
        if not self.v5 or connect is None or connect.will is None:
            return 0
        return connect.will.properties.will_delay_interval or 0

    def end(self, outlet: Outlet) -> Message | None:
        """Detach `outlet` from the broker's session; return the will to publish (mounted),
        or None when the client sent DISCONNECT or set no will. MQTT 5: the will keeps its
        properties and expiry (counted from now plus its delay)."""
        will = None
        connect = self.conn.connect
        if not self.graceful and connect is not None and connect.will is not None:
            w = connect.will
            try:
                props, expires_at = None, None
                if self.v5 and w.properties:
                    props = inbound_props(w.properties, self.jail)
                    interval = w.properties.message_expiry_interval
                    if interval is not None:
                        expires_at = self._services.clock() + self.will_delay + interval
                will = Message(self.jail.mount_topic(w.topic), w.payload, QoS(w.qos), w.retain,
                               props=props, expires_at=expires_at)
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
        self._services.broker.disconnect(self.key, outlet, expiry=self.disconnect_expiry)
        self._services.limits.close_network(self.identity.network)
        return will
