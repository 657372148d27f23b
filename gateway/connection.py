"""One device connection, from TCP accept to its `disconnected` log line.

Theory of operation (docs/security.md has the why):

1. Admission: count the socket (total cap, accept-rate bucket) and enter the pending pool
   (capped per source and in total; full: its oldest member is evicted). Once the first
   bytes arrive, wrap it in an `SSLStream` built on the TLS context current then, and run
   `do_handshake()`, all under `handshake_timeout`. A failed handshake is logged with its
   cause (expired, revoked, unknown CA, no certificate...) and closed; it never reached MQTT.
   (`gateway.admission` holds the handshake, the identity checks and the CONNECT read.)
2. Identity: the verified peer certificate must be a device certificate
   (`identity.identity_from_der`); the network UUID it names is the jail. The per-network
   cap is applied here.
3. CONNECT under `connect_timeout`: the client id (or an assigned one for an empty id) and
   the network form the session key; `Broker.connect` takes over any live session of that
   key. Username and password are ignored: they cannot change the identity.
4. The session loop, three tasks: a reader (bytes -> `ServerConnection` events -> jail ->
   broker; the PUBLISH packets of one read go to ingest as one batch), an acker (sends each
   batch's PUBACK/PUBREC in order once ingest says it is durable, so reading goes on while
   earlier batches commit) and a writer (session outbox, then the lazy retained streams of
   new subscriptions -> `ServerConnection.publish` within the inflight window -> socket;
   `gateway.outbound` picks what goes next).
   Reading stops while the rate buckets are in debt or 64 batches await their commit, so a
   fast publisher is slowed by TCP backpressure, never dropped. The reader's deadline
   follows the keepalive (keepalive x keepalive_factor after the last complete packet).
5. `close(reason)` may come from anywhere (takeover, revocation, queue overflow, shutdown):
   it records the reason and cancels the connection's scope. Cleanup publishes the will
   unless the client sent DISCONNECT, keeps a persistent session's state, and logs one
   `disconnected` line with the reason.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING

import trio

from .admission import RECEIVE_SIZE, admit_identity, describe, handshake, read_connect
from .broker import Attached, Message, SessionKey
from .errors import AdmissionRefused, ConnectionEnds, JailViolation
from .identity import DeviceIdentity
from .jail import ERRORS_TOPIC, Jail
from .limits import ReadPacer, source_key
from .logs import ConnectionLog
from .mqtt.errors import LocalProtocolError, RemoteProtocolError
from .mqtt.events import (
    DeliveryComplete,
    Disconnected,
    PublishReceived,
    SubscribeReceived,
    UnsubscribeReceived,
)
from .mqtt.packets import ConnectReturnCode, QoS
from .mqtt.session import ServerConnection
from .outbound import Outbound
from .provisioning import RENEW, ClaimIdentity, serve_claim
from .reasons import DisconnectReason, RefusalCause, ThrottleLimit
from .storage.errors import StorageError
from .subscriptions import examine

if TYPE_CHECKING:
    from .app import Gateway

ACK_BATCHES = 64  # socket reads awaiting their commit before the reader stops reading
SEEN_INTERVAL = 5.0  # seconds between "last seen" notes to the store per connection
ACK_DRAIN = 5.0  # seconds a closing connection waits for committed acknowledgements
CLOSE_GRACE = 1.0  # seconds a closing TLS stream may take to say goodbye
WRITE_STEP = 32  # messages the writer sends before it flushes and yields to the event loop


class Connection:
    """One device connection, from TCP accept to the `disconnected` log line."""

    def __init__(self, gateway: Gateway, stream: trio.abc.Stream, peer: str) -> None:
        self.gateway = gateway
        self.config = gateway.config
        # Every line of this connection goes through its budget (docs/operations.md).
        self.log = ConnectionLog(gateway.log, rate=gateway.config.log_lines_per_connection,
                                 burst=gateway.config.log_lines_burst, metrics=gateway.metrics.mqtt)
        self.tcp = stream
        self.stream: trio.abc.Stream = stream
        self.peer = peer
        self.identity: DeviceIdentity | None = None
        self.claim: ClaimIdentity | None = None  # a claim certificate: provisioning only
        self.jail: Jail | None = None
        self.client_id: str | None = None
        self.key: SessionKey | None = None
        self.attached: Attached | None = None
        self.reason: DisconnectReason | None = None
        self.detail: str | None = None
        self.graceful = False
        self.conn: ServerConnection | None = None
        self._scope = trio.CancelScope()
        self._wake = trio.Event()
        self._send_lock = trio.Lock()
        self._inflight: dict[int, Message] = {}
        # Retained messages of new subscriptions, pulled lazily by the writer, by mounted
        # filter: at most one stream per subscription held (so <= max_subscriptions_per_session).
        self._retained: dict[str, tuple[Iterator[Message], QoS]] = {}
        self._pacer: ReadPacer | None = None  # the reader's rates, once the session runs
        self._acks: trio.MemorySendChannel | None = None
        self._acker_done = trio.Event()
        self.network_counted = False  # released by Gateway.connection_closed
        # Set once the session state is saved: a takeover waits for it before resuming.
        self.finished = trio.Event()

    # -- the broker's Outlet protocol ---------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def close(self, reason: DisconnectReason, detail: str | None = None) -> None:
        """Close this connection for `reason` (first reason wins); never blocks."""
        if self.reason is None:
            self.reason = reason
            self.detail = detail
        self._scope.cancel()

    # -- lifecycle ----------------------------------------------------------------------

    async def run(self) -> None:
        gw = self.gateway
        try:
            with self._scope:
                try:
                    await self._admit()
                    if self.claim is not None:  # the provisioning jail (provisioning.py)
                        await serve_claim(self, self.claim, self.gateway.provisioning)
                    await self._connect()
                    await self._session()
                except ConnectionEnds as closed:
                    if self.reason is None:
                        self.reason, self.detail = closed.reason, closed.detail
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    if self.reason is None:
                        self.reason = DisconnectReason.CONNECTION_LOST
                except Exception as exc:  # a bug or a failed store: this connection only
                    self._bug(exc)
        except BaseException:
            # Only cancellation gets here (Cancelled, or a group of them): the gateway stops.
            if self.reason is None:
                self.reason = DisconnectReason.SERVER_SHUTDOWN
            raise
        finally:
            with trio.CancelScope(shield=True):
                try:
                    self._cleanup()
                except Exception as exc:  # never let one connection's end stop the server
                    self._bug(exc, "cleanup: ")
                self.log.finish()  # the summary of suppressed lines, if any
                self.finished.set()
                with trio.move_on_after(CLOSE_GRACE):
                    await self._aclose()
                if self.attached is not None:
                    with trio.move_on_after(CLOSE_GRACE):
                        await gw.record_status(self, connected=False)
            gw.connection_closed(self)

    def _bug(self, exc: Exception, where: str = "") -> None:
        """An unexpected exception: it ends this connection only, logged with its type."""
        self.gateway.metrics.mqtt.internal_errors.inc()
        self.gateway.log.emit("internal_error", detail=f"{where}{type(exc).__name__}: {exc}",
                              client_id=self.client_id)
        self.close(DisconnectReason.CONNECTION_LOST, "internal error")

    async def _aclose(self) -> None:
        try:
            if self.reason not in (DisconnectReason.AUTH_ERROR, None):
                await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            pass
        try:
            await self.stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def _cleanup(self) -> None:
        gw = self.gateway
        reason = self.reason or DisconnectReason.CONNECTION_LOST
        if self.attached is not None and self.key is not None and self.conn is not None:
            connect = self.conn.connect
            if not self.graceful and connect is not None and connect.will is not None:
                self._publish_will(connect.will)
            state = self.attached.state
            if not state.clean:
                # Messages handed to the protocol core but not acknowledged are part of its
                # session_state(); the broker keeps it for the resume (MQTT-4.4.0-1).
                state.protocol_state = self.conn.session_state()
                state.inflight = dict(self._inflight)
            try:
                self.conn.close()
            except LocalProtocolError:
                pass
            gw.broker.disconnect(self.key, self)
        if self.identity is not None and self.reason is not DisconnectReason.AUTH_ERROR:
            self.log.emit("disconnected", network=self.identity.network,
                          client_id=self.client_id, serial=self.identity.serial,
                          reason=str(reason), detail=self.detail, peer=self.log.peer(self.peer))

    def _publish_will(self, will) -> None:
        assert self.jail is not None
        try:
            topic = self.jail.mount_topic(will.topic)
        except JailViolation:
            return  # refused at CONNECT already; never routed
        self.gateway.broker.publish(Message(topic, will.payload, QoS(will.qos), will.retain))
        self.gateway.metrics.mqtt.wills_published.inc()

    # -- 1 and 2: TLS and identity ------------------------------------------------------

    def evict(self, limit: str) -> None:
        """Drop this still unauthenticated connection to make room for a newer one."""
        self.gateway.metrics.mqtt.pending_evicted.inc(limit)
        self.close(DisconnectReason.THROTTLED, limit)

    async def _admit(self) -> None:
        gw = self.gateway
        # The unauthenticated phase has its own pool (max_pending, max_pending_per_source):
        # when it is full the oldest pending handshake goes, never the newcomer and never an
        # authenticated session.
        for victim, limit in gw.pending.admit(self, source_key(self.peer)):
            victim.evict(limit)  # type: ignore[attr-defined]
        started = trio.current_time()
        try:
            try:
                self.stream = await handshake(self.tcp, lambda: gw.tls.current,
                                              self.config.handshake_timeout, gw.handshakes)
            finally:
                gw.pending.release(self)
            identity = admit_identity(self.stream, gw.tls, gw.bars)  # type: ignore[arg-type]
        except AdmissionRefused as exc:
            self._refuse(exc.reason, exc.detail)
        if isinstance(identity, ClaimIdentity):
            self.claim = identity  # the provisioning jail only
            return
        gw.metrics.latency.handshake.observe(trio.current_time() - started)
        self.identity = identity
        self.jail = Jail(identity.network)
        gw.network_opened(self)

    def _refuse(self, cause: RefusalCause, detail: str) -> None:
        self.gateway.metrics.mqtt.handshakes_refused.inc(cause)
        self.log.emit("refused", reason=str(DisconnectReason.AUTH_ERROR), cause=cause,
                      detail=detail, peer=self.log.peer(self.peer))
        raise ConnectionEnds(DisconnectReason.AUTH_ERROR, cause)

    # -- 3: CONNECT ---------------------------------------------------------------------

    async def _connect(self) -> None:
        assert self.identity is not None and self.jail is not None
        cfg = self.config
        self.conn = conn = ServerConnection(
            max_packet_size=cfg.max_packet_size, max_inflight=cfg.max_inflight
        )
        event = await read_connect(self.stream, conn, cfg.connect_timeout, self._flush)
        connect = event.connect
        if connect.will is not None:
            try:
                self.jail.mount_topic(connect.will.topic)
            except JailViolation as exc:
                await self._refuse_connect(ConnectReturnCode.NOT_AUTHORIZED,
                                           DisconnectReason.CLIENT_ERROR, f"will topic: {exc}")
        # An empty id (clean session only, the core checked) gets one of ours (MQTT-3.1.3-6).
        self.client_id = connect.client_id or f"auto-{uuid.uuid4()}"
        self.key = (self.identity.network, self.client_id)
        # Counted here, not at the handshake: a takeover (the same device reconnecting over
        # a half-open connection) must get in even when its network is at its cap.
        why = self.gateway.limits.open_network(
            self.identity.network, force=self.gateway.broker.is_live(self.key)
        )
        if why is not None:
            self.gateway.metrics.mqtt.throttled.inc(why)
            await self._refuse_connect(ConnectReturnCode.SERVER_UNAVAILABLE,
                                       DisconnectReason.THROTTLED, why)
        self.network_counted = True
        attached = self.gateway.broker.connect(self.key, connect.clean_session, self)
        if attached is None:
            self.gateway.metrics.mqtt.throttled.inc(ThrottleLimit.MAX_SESSIONS_PER_NETWORK)
            await self._refuse_connect(ConnectReturnCode.SERVER_UNAVAILABLE,
                                       DisconnectReason.THROTTLED, "max_sessions_per_network")
        self.attached = attached
        finished = getattr(attached.replaced, "finished", None)
        if finished is not None:
            # Let the replaced connection save its unfinished flows before resuming them.
            with trio.move_on_after(CLOSE_GRACE * 2):
                await finished.wait()
        if attached.state.stored:
            # After a restart the queue is only in the store: read it now, in order, before
            # the CONNACK (its first drain sends it ahead of anything queued since).
            try:
                await self.gateway.broker.sessions.restore(attached.state)
            except StorageError:
                self.gateway.metrics.mqtt.queue_restore_failed.inc()
                await self._refuse_connect(ConnectReturnCode.SERVER_UNAVAILABLE,
                                           DisconnectReason.THROTTLED, "queue_restore_failed")
        resume = attached.state.protocol_state if attached.session_present else None
        if resume is not None:
            self._inflight = attached.state.inflight
        attached.state.protocol_state = None
        attached.state.inflight = {}
        conn.accept(session_present=attached.session_present, resume=resume)
        await self._flush()
        await self.gateway.record_status(self, connected=True)
        self.log.emit(
            "connected",
            network=self.identity.network,
            client_id=self.client_id,
            serial=self.identity.serial,
            clean_session=connect.clean_session,
            session_present=attached.session_present,
            keepalive=connect.keepalive,
            peer=self.log.peer(self.peer),
        )

    async def _refuse_connect(self, code: ConnectReturnCode, reason: DisconnectReason,
                              detail: str) -> None:
        """Answer the CONNECT with the refusal `code` and close for `reason`."""
        assert self.conn is not None
        self.conn.refuse(code)
        await self._flush()
        raise ConnectionEnds(reason, detail)

    # -- 4: the session loop ------------------------------------------------------------

    async def _session(self) -> None:
        # Exceptions are caught inside the nursery so they leave it bare, not grouped.
        ended: BaseException | None = None
        send, receive = trio.open_memory_channel[tuple[object, list[int], float]](ACK_BATCHES)
        self._acks = send
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer)
            nursery.start_soon(self._acker, receive)
            try:
                await self._reader()
            except (ConnectionEnds, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                ended = exc
            # Let acknowledgements already committed go out before the socket closes.
            await send.aclose()
            with trio.move_on_after(ACK_DRAIN):
                await self._acker_done.wait()
            nursery.cancel_scope.cancel()
        if ended is not None:
            raise ended

    async def _reader(self) -> None:
        assert self.conn is not None
        now = trio.current_time()
        last_seen = now
        pacer = self._pacer = ReadPacer(self.config, now)

        async def pace(size: int, published: int, named: int, now: float) -> None:
            delay, readings = pacer.delay(size, published, named, now)
            if readings:
                self._readings_throttled(readings, pacer.log_readings(now))
            if delay > 0:
                # Over a rate: stop reading, so TCP pushes back on the device.
                self.gateway.metrics.mqtt.throttle_pauses.inc()
                await trio.sleep(delay)
                pacer.resumed_at = trio.current_time()

        # Packets pipelined behind CONNECT are already in the core: handle them first.
        await pace(0, *await self._handle_events(), now)
        keepalive = self.conn.connect.keepalive if self.conn.connect is not None else 0
        while True:
            data = None
            deadline = pacer.read_deadline(self.conn.keepalive_deadline(0.0), keepalive,
                                           self.config.keepalive_factor)
            with trio.move_on_at(deadline):
                data = await self.stream.receive_some(RECEIVE_SIZE)
            if data is None:
                raise ConnectionEnds(DisconnectReason.KEEP_ALIVE_TIMEOUT)
            now = trio.current_time()
            self.conn.receive_data(data, now)
            published, named = await self._handle_events()
            if now - last_seen >= SEEN_INTERVAL:
                last_seen = now
                await self.gateway.record_seen(self)
            await pace(len(data), published, named, now)
            if not data:
                raise ConnectionEnds(DisconnectReason.CONNECTION_LOST, "peer closed the connection")

    def _readings_throttled(self, delay: float, log: bool) -> None:
        """Count a pause for the network's readings rate; log it if `log`."""
        assert self.identity is not None
        self.gateway.metrics.mqtt.readings_throttled.inc()
        if log:
            self.log.emit("readings_throttled", network=self.identity.network,
                          client_id=self.client_id, serial=self.identity.serial,
                          limit="max_readings_per_second_per_network",
                          delay=round(delay, 3))

    async def _handle_events(self) -> tuple[int, int]:
        """Handle every complete packet buffered in the core; return how many were PUBLISH
        and how many topic filters the (UN)SUBSCRIBE packets named (the rates they cost).

        PUBLISH packets are routed at once and collected; the whole batch then goes to
        ingest as one submission and its acknowledgements are queued for the acker, so the
        reader keeps reading while earlier batches commit (pipelining, in order).
        """
        assert self.conn is not None
        conn = self.conn
        batch: list[tuple[int | None, Message | None]] = []
        named = 0
        closing: ConnectionEnds | None = None
        # MQTT state this read changes (retained, queued for offline sessions) is journaled
        # by the broker's durable stores; the acks wait for it only if there is any.
        mark = self.gateway.durable_mark()
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                self.gateway.metrics.mqtt.protocol_errors.inc()
                closing = ConnectionEnds(DisconnectReason.CLIENT_ERROR, describe(exc))
                break
            if event is None:
                break
            if isinstance(event, PublishReceived):
                batch.append(self._on_publish(event))
            elif isinstance(event, SubscribeReceived):
                named += len(event.subscriptions)
                await self._answer_once_stored(self._on_subscribe, event)
            elif isinstance(event, UnsubscribeReceived):
                named += len(event.topic_filters)
                await self._answer_once_stored(self._on_unsubscribe, event)
            elif isinstance(event, DeliveryComplete):
                delivered = self._inflight.pop(event.packet_id, None)
                if delivered is not None and self.attached is not None:
                    self.gateway.broker.acknowledged(self.attached.state, delivered)
                self.wake()
            elif isinstance(event, Disconnected):
                self.graceful = event.graceful
                if event.graceful:
                    closing = ConnectionEnds(DisconnectReason.CLIENT_DISCONNECT)
                else:
                    closing = ConnectionEnds(DisconnectReason.CONNECTION_LOST, "peer closed")
                break
        changed = self.gateway.durable_mark()
        if batch:
            await self._submit(batch, changed if changed != mark else None)
        await self._flush()
        if closing is not None:
            raise closing
        return len(batch), named

    def _on_publish(self, event: PublishReceived) -> tuple[int | None, Message | None]:
        """Route one PUBLISH (or refuse it); return (packet id to acknowledge, message)."""
        assert self.jail is not None and self.identity is not None
        publish = event.publish
        gw = self.gateway
        packet_id = publish.packet_id if publish.qos > QoS.AT_MOST_ONCE else None
        if publish.topic == RENEW:  # a CSR for the signer, not a message (provisioning.py)
            gw.provisioning.renew(self, publish.payload)
            return packet_id, None
        try:
            mounted = self.jail.mount_topic(publish.topic)
        except JailViolation as exc:
            gw.metrics.mqtt.publishes_denied.inc()
            self.log.emit(
                "publish_denied", network=self.identity.network, client_id=self.client_id,
                serial=self.identity.serial, topic=publish.topic, reason=exc.why,
            )
            note = json.dumps({"error": "publish_denied", "topic": publish.topic,
                               "reason": exc.why}).encode()
            gw.broker.publish(Message(self.jail.mount_topic(ERRORS_TOPIC), note))
            return packet_id, None  # acknowledged all the same: it must not come again
        message = Message(mounted, publish.payload, publish.qos, publish.retain)
        gw.route(message)
        return packet_id, message

    async def _submit(self, batch: list[tuple[int | None, Message | None]],
                      mark: int | None = None) -> None:
        """Hand a read's publishes to ingest; acknowledge now, or via the acker once durable.

        `mark`: the broker's journal position the acknowledgements must also wait for."""
        assert self.conn is not None
        ids = [packet_id for packet_id, _ in batch if packet_id is not None]
        gw = self.gateway
        pending = await gw.submit(self, [m for _, m in batch if m is not None], mark)
        if pending is not None and pending.readings and self.identity is not None:
            # The network's readings budget: the reader pauses for the debt after this read.
            assert self._pacer is not None
            self._pacer.owe(gw.readings.debit(self.identity.network, pending.readings,
                                              trio.current_time()))
        if pending is None:
            for packet_id in ids:  # no ingest: routed is acknowledged (MQTT-4.3.2-2)
                self.conn.acknowledge(packet_id)
        else:
            # Blocks when ACK_BATCHES batches await their commit: the reader stops reading.
            await self._acks.send((pending, ids, trio.current_time()))

    async def _acker(self, receive: trio.MemoryReceiveChannel) -> None:
        """Send acknowledgements in order, each once ingest says its batch is durable."""
        assert self.conn is not None and self.jail is not None
        gw = self.gateway
        try:
            async with receive:
                async for pending, ids, read_at in receive:
                    replies = await pending.wait()
                    for packet_id in ids:
                        # Only now: what must be durable is committed (MQTT-4.3.2-2, 4.3.3-2).
                        self.conn.acknowledge(packet_id)
                    for reply in replies:
                        gw.broker.publish(Message(self.jail.mount_topic(reply.topic),
                                                  reply.payload, QoS(reply.qos), reply.retain))
                    if ids:  # one observation per read, weighted by its acknowledgements
                        gw.metrics.latency.publish_ack.observe(trio.current_time() - read_at,
                                                               len(ids))
                    await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.close(DisconnectReason.CONNECTION_LOST, "send failed")
        except StorageError as exc:  # not stored: never acknowledge it
            gw.metrics.mqtt.ingest_failures.inc()
            self.log.emit("ingest_failed", network=self.identity and self.identity.network,
                          client_id=self.client_id, detail=f"{type(exc).__name__}: {exc}")
            self.close(DisconnectReason.CONNECTION_LOST, "ingest failed")
        except Exception as exc:  # a bug, never "ingest failed"; nothing acknowledged either
            self._bug(exc)
        finally:
            self._acker_done.set()

    async def _answer_once_stored(self, handle: Callable[..., Callable[[], None]],
                                  event: object) -> None:
        """Apply a (UN)SUBSCRIBE, and answer it once a persistent session's subscriptions
        are stored: before the next packet of the read, so answers keep their order.
        Subscriptions are rare; the reader may wait one commit for them."""
        gw = self.gateway
        before = gw.durable_mark()
        answer = handle(event)
        after = gw.durable_mark()
        if after != before:
            await gw.wait_durable(after)
        answer()

    def _on_unsubscribe(self, event: UnsubscribeReceived) -> Callable[[], None]:
        assert self.conn is not None and self.attached is not None and self.jail is not None
        for topic_filter in event.topic_filters:
            if not topic_filter.startswith("$"):
                mounted = self.jail.mount_filter(topic_filter)
                self.gateway.broker.unsubscribe(self.attached.state, mounted)
                self._retained.pop(mounted, None)  # no new messages for it (MQTT-3.10.4-2)
        return partial(self.conn.unsubscribed, event.packet_id)

    def _on_subscribe(self, event: SubscribeReceived) -> Callable[[], None]:
        """Subscribe in the broker; return what sends the SUBACK and then queues the
        retained messages (MQTT-3.3.1-6) as lazy streams for the writer."""
        assert self.conn is not None and self.jail is not None and self.attached is not None
        request = examine(event.subscriptions, self.jail, self.config.max_filters_per_subscribe)
        streams = request.apply(self.gateway.broker, self.attached.state)
        request.count(self.gateway.metrics.mqtt)

        def answer() -> None:
            assert self.conn is not None and self.identity is not None
            self.conn.grant(event.packet_id, request.codes())
            for mounted, stream, qos in streams:
                # Subscribing again restarts the filter's stream (MQTT-3.8.4-3 re-sends).
                self._retained.pop(mounted, None)
                self._retained[mounted] = (stream, qos)
            request.log(self.log, {"network": self.identity.network,
                                   "client_id": self.client_id}, self.identity.serial)
            self.wake()

        return answer

    async def _writer(self) -> None:
        try:
            await self._write_loop()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.close(DisconnectReason.CONNECTION_LOST, "send failed")

    async def _write_loop(self) -> None:
        """Hand queued messages to the protocol core as the inflight window takes them
        (`outbound.fill`), flush, and yield to the event loop after every WRITE_STEP
        messages, so no delivery burst holds the loop."""
        assert self.conn is not None and self.attached is not None and self.jail is not None
        queue = Outbound(self.conn, self.attached.state.outbox, self._retained, self.jail,
                         self._inflight, self.gateway.metrics.mqtt)
        while True:
            self._wake = trio.Event()
            sent = queue.fill(WRITE_STEP)
            await self._flush()
            if sent >= WRITE_STEP:
                await trio.lowlevel.checkpoint()
                continue
            await self._wake.wait()

    async def _flush(self) -> None:
        if self.conn is None:
            return
        async with self._send_lock:
            data = self.conn.data_to_send()
            if data:
                await self.stream.send_all(data)
