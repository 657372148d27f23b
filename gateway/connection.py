"""One device connection, from TCP accept to its `disconnected` log line: the trio side.

Theory of operation (docs/security.md has the why). The connection owns the socket, the
deadlines and three tasks; the sans-IO `device_session` decides what to do with what it
reads. It holds one phase at a time: none while unauthenticated, then `Admitted` (or a
claim's `ClaimIdentity`, served by `provisioning.serve_claim`), then the `DeviceSession`.

1. Admission (`gateway.admission`): the pending pool (capped per source and in total, its
   oldest member evicted), the TLS handshake under `handshake_timeout` once the first bytes
   arrive, the verified certificate's identity. A refusal is logged with its cause; one of
   OpenSSL's sends its TLS alert first, one of the gateway's own after the handshake (a
   barred network, not a device certificate) answers the CONNECT with CONNACK not
   authorized (`admission.answer_refusal`).
2. CONNECT under `connect_timeout`, then `open_session` decides: the session (the client id,
   or one of ours for an empty id; a live session of the same key is taken over) or a
   refusal. Username and password are ignored: they cannot change the identity.
3. Three tasks: a reader (bytes -> `DeviceSession.receive_data` -> its actions: a read's
   publishes go to `Gateway.accept` as one batch, which returns one durability handle), an
   acker (awaits the handles in order, then the session acknowledges each batch, so reading
   goes on while earlier batches commit) and a writer (`DeviceSession.fill` -> socket).
   Reading stops while the rate buckets are in debt or 64 batches await their commit: a fast
   publisher is slowed by TCP backpressure, never dropped. The read deadline follows the
   keepalive (keepalive x keepalive_factor after the last complete packet).
4. `close(reason)` may come from anywhere (takeover, revocation, queue overflow, shutdown):
   it records the first reason and cancels the connection's scope. Cleanup ends the session
   (`DeviceSession.end`: the will unless the client sent DISCONNECT, a persistent session's
   state kept) and logs one `disconnected` line with the reason. An MQTT 5 client is told
   the reason first (DISCONNECT with its code and the detail as reason string,
   `gateway.answers.disconnect_reason`), and its will waits its delay interval in the
   broker when its session outlives the connection.
"""

from __future__ import annotations

import uuid
from contextlib import suppress
from typing import TYPE_CHECKING

import trio

from .admission import (
    RECEIVE_SIZE,
    admit_identity,
    answer_refusal,
    handshake,
    read_connect,
    send_alert,
)
from .answers import disconnect_reason
from .device_session import (
    Admitted,
    Close,
    DeviceSession,
    Refusal,
    Renew,
    StoreWait,
    Submit,
    open_session,
)
from .errors import AdmissionRefused, ConnectionEnds
from .identity import DeviceIdentity
from .jail import Jail
from .limits import ReadPacer, source_key
from .logs import ConnectionLog
from .mqtt.errors import LocalProtocolError
from .mqtt.packets import ConnectReturnCode
from .mqtt.session import ServerConnection
from .provisioning import ClaimIdentity, claim_core, serve_claim
from .reasons import DisconnectReason
from .storage.errors import StorageError

if TYPE_CHECKING:
    from .app import Gateway

ACK_BATCHES = 64  # socket reads awaiting their commit before the reader stops reading
SEEN_INTERVAL = 5.0  # seconds between "last seen" notes to the store per connection
ACK_DRAIN = 5.0  # seconds a closing connection waits for committed acknowledgements
CLOSE_GRACE = 1.0  # seconds a closing TLS stream may take to say goodbye
WRITE_STEP = 32  # messages the writer sends before it flushes and yields to the event loop


class Connection:
    """One device connection, from TCP accept to the `disconnected` log line."""

    def __init__(self, gateway: Gateway, stream: trio.SocketStream, peer: str) -> None:
        self.gateway = gateway
        self.config = gateway.config
        # Every line of this connection goes through its budget (docs/operations.md).
        self.log = ConnectionLog(gateway.log, rate=gateway.config.log_lines_per_connection,
                                 burst=gateway.config.log_lines_burst, metrics=gateway.metrics.mqtt)
        self.tcp = stream
        self.stream: trio.abc.Stream = stream
        self.peer = peer
        self.phase: Admitted | ClaimIdentity | DeviceSession | None = None
        self.client_id: str | None = None  # once the CONNECT named it (for log lines)
        self.reason: DisconnectReason | None = None
        self.detail: str | None = None
        # The protocol core on this socket once a CONNECT is read: what `flush` sends.
        self._core: ServerConnection | None = None
        self._scope = trio.CancelScope()
        self._wake = trio.Event()
        self._send_lock = trio.Lock()
        self._acker_done = trio.Event()
        # Set once the session state is saved: a takeover waits for it before resuming.
        self.finished = trio.Event()

    @property
    def identity(self) -> DeviceIdentity | None:
        """The device identity admission proved (None before, and for a claim)."""
        phase = self.phase
        return phase.identity if isinstance(phase, Admitted | DeviceSession) else None

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
                    admitted = await self._admit()
                    if isinstance(admitted, ClaimIdentity):  # the provisioning jail only
                        self._core = claim_core(self.config)
                        await serve_claim(admitted, gw.provisioning, self._core, self)
                    else:
                        await self._serve(await self._connect(admitted))
                except ConnectionEnds as closed:  # the first reason given wins
                    self.close(closed.reason, closed.detail)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self.close(DisconnectReason.CONNECTION_LOST)
                except Exception as exc:  # a bug or a failed store: this connection only
                    self._bug(exc)
        except BaseException:
            # Only cancellation gets here (Cancelled, or a group of them): the gateway stops.
            if self.reason is None:
                self.reason = DisconnectReason.SERVER_SHUTDOWN
            raise
        finally:
            with trio.CancelScope(shield=True):
                await self._end()
            gw.connection_closed(self, self.reason)

    def _bug(self, exc: BaseException, where: str = "") -> None:
        """An unexpected exception: it ends this connection only, logged with its type."""
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]  # a task's bug, grouped by its nursery
        self.gateway.metrics.mqtt.internal_errors.inc()
        self.gateway.log.emit("internal_error", detail=f"{where}{type(exc).__name__}: {exc}",
                              client_id=self.client_id)
        self.close(DisconnectReason.CONNECTION_LOST, "internal error")

    async def _end(self) -> None:
        """The close walk (shielded): end the session, log the reason, say goodbye within
        CLOSE_GRACE, then record the device's status."""
        gw, session = self.gateway, self.phase
        try:
            if isinstance(session, DeviceSession):
                if session.v5:
                    self._tell_reason(session)
                will = session.end(self)
                delay = session.will_delay
                if will is not None and delay and (
                        self.reason is DisconnectReason.DUPLICATE_CLIENTID):
                    pass  # MQTT 5: a new connection came within the delay, no will
                elif will is not None and delay and gw.broker.sessions.get(session.key):
                    gw.broker.hold_will(session.key, will, delay)  # MQTT 5 will delay
                    gw.metrics.mqtt.wills_delayed.inc()
                elif will is not None:
                    gw.broker.publish(will)
                    gw.metrics.mqtt.wills_published.inc()
            identity = self.identity
            if identity is not None and self.reason is not DisconnectReason.AUTH_ERROR:
                self.log.emit("disconnected", network=identity.network,
                              client_id=self.client_id, serial=identity.serial,
                              reason=str(self.reason or DisconnectReason.CONNECTION_LOST),
                              detail=self.detail, peer=self.log.peer(self.peer))
        except Exception as exc:  # never let one connection's end stop the server
            self._bug(exc, "cleanup: ")
        self.log.finish()  # the summary of suppressed lines, if any
        self.finished.set()
        with trio.move_on_after(CLOSE_GRACE):
            if self.reason not in (DisconnectReason.AUTH_ERROR, None):
                with suppress(trio.BrokenResourceError, trio.ClosedResourceError,
                              trio.BusyResourceError):
                    await self.flush()
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.stream.aclose()
        if isinstance(session, DeviceSession):
            with trio.move_on_after(CLOSE_GRACE):
                await gw.record_disconnected(session.identity, session.client_id,
                                             self.reason or DisconnectReason.CONNECTION_LOST)

    def _tell_reason(self, session: DeviceSession) -> None:
        """MQTT 5: queue the server's DISCONNECT for this close's reason, if it has one."""
        code = disconnect_reason(self.reason) if self.reason is not None else None
        if code is None or session.graceful:
            return
        text = str(self.reason) + (f": {self.detail}" if self.detail else "")
        reference = self.detail if self.reason is DisconnectReason.USE_ANOTHER_SERVER else None
        with suppress(LocalProtocolError):  # already ended (a protocol error, EOF)
            session.conn.disconnect(code, reason_string=text, server_reference=reference)

    async def flush(self) -> None:
        """Send what the protocol core has queued (nothing before a CONNECT is read)."""
        core = self._core
        if core is None:
            return
        async with self._send_lock:
            data = core.data_to_send()
            if data:
                await self.stream.send_all(data)

    # -- 1: admission -------------------------------------------------------------------

    def evict(self, limit: str) -> None:
        """Drop this still unauthenticated connection to make room for a newer one."""
        self.gateway.metrics.mqtt.pending_evicted.inc(limit)
        self.close(DisconnectReason.THROTTLED, limit)

    async def _admit(self) -> Admitted | ClaimIdentity:
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
            gw.metrics.mqtt.handshakes_refused.inc(exc.reason)
            # Not yet identified: the line counts against its source's budget.
            gw.refusals.emit(source_key(self.peer), "refused",
                             reason=str(DisconnectReason.AUTH_ERROR), cause=exc.reason,
                             detail=exc.detail, peer=self.log.peer(self.peer))
            if self.stream is self.tcp:  # OpenSSL refused: its alert says why
                await send_alert(self.tcp, exc)
            else:  # TLS is up: the refusal goes in a CONNACK
                await answer_refusal(self.stream, exc, self.config.connect_timeout,
                                     self.config.max_packet_size)
            raise ConnectionEnds(DisconnectReason.AUTH_ERROR, exc.reason) from None
        if isinstance(identity, ClaimIdentity):
            self.phase = identity
            return identity
        gw.metrics.latency.handshake.observe(trio.current_time() - started)
        self.phase = admitted = Admitted(identity, Jail(identity.network), self.peer)
        gw.network_opened(self, identity, self.stream.getpeercert(binary_form=True))
        return admitted

    # -- 2: CONNECT ---------------------------------------------------------------------

    async def _connect(self, admitted: Admitted) -> DeviceSession:
        gw, cfg = self.gateway, self.config
        core = self._core = ServerConnection(
            max_packet_size=cfg.max_packet_size, max_inflight=cfg.max_inflight,
            max_inbound_inflight=cfg.receive_maximum,
            topic_alias_maximum=cfg.topic_alias_maximum, max_topic_levels=cfg.max_topic_levels,
            # The core sees the device's topic; the limit is on the mounted one.
            max_topic_length=max(1, cfg.max_mounted_topic_length - len(admitted.jail.prefix)))
        connect = (await read_connect(self.stream, core, cfg.connect_timeout, self.flush)).connect
        # An empty id (clean session only, the core checked) gets one of ours (MQTT-3.1.3-6).
        client_id = self.client_id = connect.client_id or f"auto-{uuid.uuid4()}"
        # In a cluster this node claims the session key first (a takeover across nodes).
        cluster = gw.peers
        why = None if cluster is None else await cluster.claim(admitted.jail, client_id, connect)
        opened: DeviceSession | Refusal
        if why is not None:
            opened = Refusal(ConnectReturnCode.SERVER_UNAVAILABLE, DisconnectReason.THROTTLED, why)
        else:
            opened = open_session(admitted, connect, client_id, core, gw.sessions, self,
                                  self.log, self.wake)
            if isinstance(opened, Refusal) and cluster is not None:  # claimed, not opened
                cluster.ended((admitted.identity.network, client_id), not connect.clean_session)
        if isinstance(opened, Refusal):
            core.refuse(opened.code, reason_string=opened.detail)  # the string: MQTT 5 only
            await self.flush()
            raise ConnectionEnds(opened.reason, opened.detail)
        self.phase = session = opened
        # A takeover: let the replaced connection save its unfinished flows before resuming.
        finished = getattr(session.replaced, "finished", None)
        if finished is not None:
            with trio.move_on_after(CLOSE_GRACE * 2):
                await finished.wait()
        if session.state.stored:
            # After a restart the queue is only in the store: read it now, in order, before
            # the CONNACK (its first drain sends it ahead of anything queued since).
            try:
                await gw.broker.sessions.restore(session.state)
            except StorageError:
                gw.metrics.mqtt.queue_restore_failed.inc()
                core.refuse(ConnectReturnCode.SERVER_UNAVAILABLE)
                await self.flush()
                raise ConnectionEnds(DisconnectReason.THROTTLED, "queue_restore_failed") from None
        session.accept()
        await self.flush()
        await gw.record_connected(admitted.identity, client_id)
        self.log.emit("connected", network=admitted.identity.network, client_id=client_id,
                      serial=admitted.identity.serial, clean_session=connect.clean_session,
                      session_present=session.session_present, keepalive=session.keepalive,
                      peer=self.log.peer(self.peer),
                      **({"mqtt": 5, "session_expiry": session.state.expiry}
                         if session.v5 else {}))
        return session

    # -- 3: the session's tasks ---------------------------------------------------------

    async def _serve(self, session: DeviceSession) -> None:
        # Exceptions are caught inside the nursery so they leave it bare, not grouped.
        ended: BaseException | None = None
        send, receive = trio.open_memory_channel[tuple](ACK_BATCHES)  # (handle, ids, read at)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer, session)
            nursery.start_soon(self._acker, session, receive)
            try:
                await self._reader(session, send)
            except (ConnectionEnds, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                ended = exc
            # Let acknowledgements already committed go out before the socket closes.
            await send.aclose()
            with trio.move_on_after(ACK_DRAIN):
                await self._acker_done.wait()
            nursery.cancel_scope.cancel()
        if ended is not None:
            raise ended

    async def _reader(self, session: DeviceSession, acks: trio.MemorySendChannel) -> None:
        gw, cfg = self.gateway, self.config
        now = trio.current_time()
        last_seen = now
        pacer = ReadPacer(cfg, now)
        # Packets pipelined behind CONNECT are already in the core: handle them first.
        await self._act(session, pacer, acks)
        await self._pace(session, pacer, 0, now)
        keepalive = session.keepalive
        while True:
            data = None
            deadline = pacer.read_deadline(session.conn.keepalive_deadline(0.0), keepalive,
                                           cfg.keepalive_factor)
            with trio.move_on_at(deadline):
                data = await self.stream.receive_some(RECEIVE_SIZE)
            if data is None:
                raise ConnectionEnds(DisconnectReason.KEEP_ALIVE_TIMEOUT)
            now = trio.current_time()
            session.receive_data(data, now)
            await self._act(session, pacer, acks)
            if now - last_seen >= SEEN_INTERVAL:
                last_seen = now
                await gw.record_seen(session.identity)
            await self._pace(session, pacer, len(data), now)
            if not data:
                raise ConnectionEnds(DisconnectReason.CONNECTION_LOST, "peer closed the connection")

    async def _act(self, session: DeviceSession, pacer: ReadPacer,
                   acks: trio.MemorySendChannel) -> None:
        """Carry out the session's actions for what was read, then send its answers.

        Raises:
            ConnectionEnds: the session closes (after the read's batch went to ingest).
        """
        gw = self.gateway
        while (action := session.next_action()) is not None:
            if type(action) is Submit:
                handle = await gw.accept(session.identity.network_uuid, session.client_id,
                                         action.reports, action.journal)
                if handle is None:  # no ingest: routed is acknowledged (MQTT-4.3.2-2)
                    session.durable(action.acknowledge, (), self._reasons(session, action, ()))
                    continue
                if handle.readings:
                    # The network's readings budget: the reader pauses for the debt.
                    pacer.owe(gw.readings.debit(session.identity.network, handle.readings,
                                                trio.current_time()))
                # Blocks when ACK_BATCHES batches await their commit: the reader stops.
                await acks.send((handle, action, trio.current_time()))
            elif type(action) is StoreWait:
                await gw.wait_durable(action.mark)
            elif type(action) is Renew:  # a CSR for the signer (provisioning.py)
                der = self.stream.getpeercert(binary_form=True)  # type: ignore[attr-defined]
                gw.provisioning.renew(session.identity, session.jail, der, action.payload,
                                      gw.broker.publish)
            elif type(action) is Close:
                await self.flush()
                raise ConnectionEnds(action.reason, action.detail)
        await self.flush()

    async def _pace(self, session: DeviceSession, pacer: ReadPacer, size: int,
                    now: float) -> None:
        """Charge one read to the connection's rates; over one, stop reading for a while
        (TCP then pushes back on the device)."""
        delay, readings = pacer.delay(size, session.published, session.named, now)
        if readings:
            session.readings_throttled(readings, pacer.log_readings(now))
        if delay > 0:
            self.gateway.metrics.mqtt.throttle_pauses.inc()
            await trio.sleep(delay)
            pacer.resumed_at = trio.current_time()

    async def _acker(self, session: DeviceSession, receive: trio.MemoryReceiveChannel) -> None:
        """Send acknowledgements in order, each once its batch's handle says it is durable.
        A failed commit closes the connection with nothing more acknowledged; anything else
        raised here is a bug and leaves as one."""
        gw = self.gateway
        try:
            async with receive:
                async for handle, action, read_at in receive:
                    replies = await handle.wait()
                    ids = action.acknowledge
                    # Only now: what must be durable is committed (MQTT-4.3.2-2, 4.3.3-2).
                    session.durable(ids, replies, self._reasons(
                        session, action, getattr(handle, "verdicts", ())))
                    if ids:  # one observation per read, weighted by its acknowledgements
                        gw.metrics.latency.publish_ack.observe(trio.current_time() - read_at,
                                                               len(ids))
                    await self.flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.close(DisconnectReason.CONNECTION_LOST, "send failed")
        except StorageError as exc:  # not stored: never acknowledge it
            gw.metrics.mqtt.ingest_failures.inc()
            self.log.emit("ingest_failed", network=session.identity.network,
                          client_id=session.client_id, detail=f"{type(exc).__name__}: {exc}")
            self.close(DisconnectReason.CONNECTION_LOST, "ingest failed")
        finally:
            self._acker_done.set()

    def _reasons(self, session: DeviceSession, action: Submit,
                 verdicts: object) -> dict[int, tuple[int, str]] | None:
        """MQTT 5: the refusal reasons of `action`'s acknowledgements (None for 3.1.1)."""
        if not session.v5:
            return None
        reasons = session.reasons_for(action, verdicts)  # type: ignore[arg-type]
        if reasons:
            self.gateway.metrics.mqtt.publishes_refused.inc(len(reasons))
        return reasons

    async def _writer(self, session: DeviceSession) -> None:
        """Hand queued messages to the protocol core as the inflight window takes them,
        flush, and yield to the event loop after every WRITE_STEP messages, so no delivery
        burst holds the loop."""
        try:
            while True:
                self._wake = trio.Event()
                sent = session.fill(WRITE_STEP)
                await self.flush()
                if sent >= WRITE_STEP:
                    await trio.lowlevel.checkpoint()
                    continue
                await self._wake.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.close(DisconnectReason.CONNECTION_LOST, "send failed")
