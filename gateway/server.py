"""The MQTT-over-mTLS listener: accept TCP, apply the socket limits, one task per connection.

`serve_mqtt` binds the listener, starts the TLS file watcher (revocation), logs `listening`
with the bound address, and runs `Connection.run` (connection.py) for every accepted socket.
Cancelling it stops accepting and closes every session with SERVER_SHUTDOWN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from .connection import Connection
from .limits import source_key
from .reasons import DisconnectReason

if TYPE_CHECKING:
    from .app import Gateway


async def serve_mqtt(gateway: Gateway, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve MQTT over mTLS on `gateway.config.mqtt` until cancelled.

    Starts the TLS file watcher too. `task_status.started((host, port))` reports the bound
    address (port 0 in the config picks a free port) once the socket listens, after the
    `listening` log line.
    """
    from .listeners import open_tcp_listeners
    from .revocation import watch_tls_files

    host, port = gateway.config.mqtt_address
    listeners = await open_tcp_listeners(port, host=host, backlog=4096,
                                         reuse_port=gateway.config.reuse_port)
    sockname = listeners[0].socket.getsockname()
    bound = (sockname[0], sockname[1])
    shown = f"[{bound[0]}]:{bound[1]}" if ":" in bound[0] else f"{bound[0]}:{bound[1]}"
    async with trio.open_nursery() as connections:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(watch_tls_files, gateway)
                await nursery.start(gateway.provisioning.serve)
                for listener in listeners:
                    nursery.start_soon(_accept_loop, gateway, listener, connections)
                gateway.log.emit("listening", mqtt=shown)
                gateway.check_crl_freshness()
                task_status.started(bound)
        finally:
            # Stop accepting first, then close every session (SERVER_SHUTDOWN).
            for listener in listeners:
                with trio.CancelScope(shield=True):
                    await listener.aclose()
            for live in gateway.connections:
                live.close(DisconnectReason.SERVER_SHUTDOWN)


async def _accept_loop(
    gateway: Gateway, listener: trio.SocketListener, connections: trio.Nursery
) -> None:
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            # EMFILE and friends: log, back off a little, keep serving the others.
            gateway.log.emit("accept_error", detail=str(exc))
            await trio.sleep(0.1)
            continue
        try:
            peer = stream.socket.getpeername()[0]
        except OSError:
            await stream.aclose()
            continue
        source = source_key(peer)
        why = gateway.limits.open_socket(trio.current_time(), source)
        if why is not None:
            gateway.metrics.mqtt.throttled.inc(why)
            gateway.activity.refused()
            gateway.refusals.emit(
                source, "refused", reason=str(DisconnectReason.THROTTLED), cause=why,
                peer=gateway.log.peer(peer),
            )
            await stream.aclose()
            continue
        connection = Connection(gateway, stream, peer)
        gateway.connection_opened(connection)
        connections.start_soon(connection.run)
