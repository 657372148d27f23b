"""One device connection, from TCP accept to its `disconnected` log line: the trio side.

Theory of operation (docs/security.md has the why). The connection owns the socket, the
deadlines and three tasks; what to do with what it reads is decided by the sans-IO
`device_session.DeviceSession`. It holds one phase at a time (`phase`): None while
unauthenticated, then `Admitted` (or a claim's `ClaimIdentity`), then the `DeviceSession`.

1. Admission (`gateway.admission`): the socket joins the pending pool (capped per source and
   in total; full: its oldest member is evicted); once the first bytes arrive, the TLS
   handshake runs under `handshake_timeout`, and the verified certificate must be a device's
   (its network UUID is the jail) or a claim's (`provisioning.serve_claim`). A refusal is
   logged with its cause and closed; it never reached MQTT.
2. CONNECT under `connect_timeout`: the client id (or an assigned one for an empty id) and
   the network form the session key; the per-network cap applies here, and `Broker.connect`
   takes over any live session of that key. Username and password are ignored: they cannot
   change the identity.
3. The session, three tasks: a reader (bytes -> `DeviceSession.receive_data`, then its
   actions: a read's publishes go to `Gateway.accept` as one batch, which returns one
   durability handle), an acker (awaits each handle in order, then has the session send the
   batch's PUBACK/PUBREC, so reading goes on while earlier batches commit) and a writer
   (`DeviceSession.fill` within the inflight window -> socket).
   Reading stops while the rate buckets are in debt or 64 batches await their commit, so a
   fast publisher is slowed by TCP backpressure, never dropped. The reader's deadline
   follows the keepalive (keepalive x keepalive_factor after the last complete packet).
4. `close(reason)` may come from anywhere (takeover, revocation, queue overflow, shutdown):
   it records the reason and cancels the connection's scope. Cleanup ends the session (the
   will unless the client sent DISCONNECT, a persistent session's state kept) and logs one
   `disconnected` line with the reason.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import trio

from .admission import RECEIVE_SIZE, admit_identity, handshake, read_connect
from .device_session import Admitted, Close, DeviceSession, Renew, StoreWait, Submit
from .errors import AdmissionRefused, ConnectionEnds, JailViolation
from .identity import DeviceIdentity
from .jail import Jail
from .limits import ReadPacer, source_key
from .logs import ConnectionLog
from .mqtt.packets import ConnectReturnCode
from .mqtt.session import ServerConnection
from .provisioning import ClaimIdentity, claim_core, serve_claim
from .reasons import DisconnectReason
from .storage.errors import StorageError

if TYPE_CHECKING:
    from .app import Gateway
    from .durability import DurabilityHandle

ACK_BATCHES = 64  # socket reads awaiting their commit before the reader stops reading
SEEN_INTERVAL = 5.0  # seconds between "last seen" notes to the store per connection
ACK_DRAIN = 5.0  # seconds a closing connection waits for committed acknowledgements
CLOSE_GRACE = 1.0  # seconds a closing TLS stream may take to say goodbye
WRITE_STEP = 32  # messages the writer sends before it flushes and yields to the event loop

Phase = Admitted | ClaimIdentity | DeviceSession | None


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
        self.phase: Phase = None
        self.client_id: str | None = None  # once the CONNECT named it (for log lines)
        self.reason: DisconnectReason | None = None
        self.detail: str | None = None
        # The protocol core on this socket once a CONNECT is read: what `flush` sends.
        self._core: ServerConnection | None = None
        self._network: str | None = None  # counted against its cap (limits.open_network)
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
                session = self.phase
                if isinstance(session, DeviceSession):
                    with trio.move_on_after(CLOSE_GRACE):
                        await gw.record_disconnected(
                            session.identity, session.client_id,
                            self.reason or DisconnectReason.CONNECTION_LOST)
            gw.connection_closed(self, network=self._network, reason=self.reason)

    def _bug(self, exc: BaseException, where: str = "") -> None:
        """An unexpected exception: it ends this connection only, logged with its type."""
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]  # a task's bug, grouped by its nursery
        self.gateway.counters["internal_errors"] += 1
        self.gateway.log.emit("internal_error", detail=f"{where}{type(exc).__name__}: {exc}",
                              client_id=self.client_id)
        self.close(DisconnectReason.CONNECTION_LOST, "internal error")

    async def _aclose(self) -> None:
        try:
            if self.reason not in (DisconnectReason.AUTH_ERROR, None):
                await self.flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            pass
        try:
            await self.stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def _cleanup(self) -> None:
        gw = self.gateway
        reason = self.reason or DisconnectReason.CONNECTION_LOST
        if isinstance(self.phase, DeviceSession):
            will = self.phase.end(self)
            if will is not None:
                gw.broker.publish(will)
                gw.counters["wills_published"] += 1
        identity = self.identity
        if identity is not None and self.reason is not DisconnectReason.AUTH_ERROR:
            self.log.emit("disconnected", network=identity.network,
                          client_id=self.client_id, serial=identity.serial,
                          reason=str(reason), detail=self.detail, peer=self.log.peer(self.peer))

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
            gw.counters[f"handshake_refused_{exc.reason}"] += 1
            self.log.emit("refused", reason=str(DisconnectReason.AUTH_ERROR), cause=exc.reason,
                          detail=exc.detail, peer=self.log.peer(self.peer))
            raise ConnectionEnds(DisconnectReason.AUTH_ERROR, exc.reason) from None
        if isinstance(identity, ClaimIdentity):
            self.phase = identity
            return identity
        gw.latency.handshake.observe(trio.current_time() - started)
        self.phase = admitted = Admitted(identity, Jail(identity.network), self.peer)
        gw.network_opened(self, identity)
        return admitted

    # -- 2: CONNECT ---------------------------------------------------------------------

    async def _connect(self, admitted: Admitted) -> DeviceSession:
        gw, cfg = self.gateway, self.config
        core = self._core = ServerConnection(max_packet_size=cfg.max_packet_size,
                                             max_inflight=cfg.max_inflight)
        connect = (await read_connect(self.stream, core, cfg.connect_timeout, self.flush)).connect
        if connect.will is not None:
            try:
                admitted.jail.mount_topic(connect.will.topic)
            except JailViolation as exc:
                await self._refuse(core, ConnectReturnCode.NOT_AUTHORIZED,
                                   DisconnectReason.CLIENT_ERROR, f"will topic: {exc}")
        # An empty id (clean session only, the core checked) gets one of ours (MQTT-3.1.3-6).
        client_id = self.client_id = connect.client_id or f"auto-{uuid.uuid4()}"
        network = admitted.identity.network
        key = (network, client_id)
        # Counted here, not at the handshake: a takeover (the same device reconnecting over
        # a half-open connection) must get in even when its network is at its cap.
        why = gw.limits.open_network(network, force=gw.broker.is_live(key))
        if why is not None:
            gw.counters[f"throttled_{why}"] += 1
            await self._refuse(core, ConnectReturnCode.SERVER_UNAVAILABLE,
                               DisconnectReason.THROTTLED, why)
        self._network = network
        attached = gw.broker.connect(key, connect.clean_session, self)
        if attached is None:
            gw.counters["throttled_max_sessions_per_network"] += 1
            await self._refuse(core, ConnectReturnCode.SERVER_UNAVAILABLE,
                               DisconnectReason.THROTTLED, "max_sessions_per_network")
        self.phase = session = DeviceSession(admitted, client_id, attached, core, gw.sessions,
                                             self.log, self.wake)
        finished = getattr(attached.replaced, "finished", None)
        if finished is not None:
            # Let the replaced connection save its unfinished flows before resuming them.
            with trio.move_on_after(CLOSE_GRACE * 2):
                await finished.wait()
        if attached.state.stored:
            # After a restart the queue is only in the store: read it now, in order, before
            # the CONNACK (its first drain sends it ahead of anything queued since).
            try:
                await gw.broker.sessions.restore(attached.state)
            except StorageError:
                gw.counters["queue_restore_failed"] += 1
                await self._refuse(core, ConnectReturnCode.SERVER_UNAVAILABLE,
                                   DisconnectReason.THROTTLED, "queue_restore_failed")
        session.accept()
        await self.flush()
        await gw.record_connected(admitted.identity, client_id)
        self.log.emit("connected", network=network, client_id=client_id,
                      serial=admitted.identity.serial, clean_session=connect.clean_session,
                      session_present=attached.session_present, keepalive=connect.keepalive,
                      peer=self.log.peer(self.peer))
        return session

    async def _refuse(self, core: ServerConnection, code: ConnectReturnCode,
                      reason: DisconnectReason, detail: str) -> None:
        """Answer the CONNECT `core` read with the refusal `code` and close for `reason`."""
        core.refuse(code)
        await self.flush()
        raise ConnectionEnds(reason, detail)

    # -- 3: the session's tasks ---------------------------------------------------------

    async def _serve(self, session: DeviceSession) -> None:
        # Exceptions are caught inside the nursery so they leave it bare, not grouped.
        ended: BaseException | None = None
        send, receive = trio.open_memory_channel[tuple["DurabilityHandle", list[int], float]](
            ACK_BATCHES)
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
                    session.durable(action.acknowledge)
                    continue
                if handle.readings:
                    # The network's readings budget: the reader pauses for the debt.
                    pacer.owe(gw.readings.debit(session.identity.network, handle.readings,
                                                trio.current_time()))
                # Blocks when ACK_BATCHES batches await their commit: the reader stops.
                await acks.send((handle, action.acknowledge, trio.current_time()))
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
            self.gateway.counters["readings_throttled"] += 1
            if pacer.log_readings(now):
                self.log.emit("readings_throttled", network=session.identity.network,
                              client_id=session.client_id, serial=session.identity.serial,
                              limit="max_readings_per_second_per_network",
                              delay=round(readings, 3))
        if delay > 0:
            self.gateway.counters["throttle_pauses"] += 1
            await trio.sleep(delay)
            pacer.resumed_at = trio.current_time()

    async def _acker(self, session: DeviceSession, receive: trio.MemoryReceiveChannel) -> None:
        """Send acknowledgements in order, each once its batch's handle says it is durable.
        A failed commit closes the connection with nothing more acknowledged; anything else
        raised here is a bug and leaves as one."""
        gw = self.gateway
        try:
            async with receive:
                async for handle, ids, read_at in receive:
                    replies = await handle.wait()
                    # Only now: what must be durable is committed (MQTT-4.3.2-2, 4.3.3-2).
                    session.durable(ids, replies)
                    if ids:  # one observation per read, weighted by its acknowledgements
                        gw.latency.publish_ack.observe(trio.current_time() - read_at, len(ids))
                    await self.flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.close(DisconnectReason.CONNECTION_LOST, "send failed")
        except StorageError as exc:  # not stored: never acknowledge it
            gw.counters["ingest_failures"] += 1
            self.log.emit("ingest_failed", network=session.identity.network,
                          client_id=session.client_id, detail=f"{type(exc).__name__}: {exc}")
            self.close(DisconnectReason.CONNECTION_LOST, "ingest failed")
        finally:
            self._acker_done.set()

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
