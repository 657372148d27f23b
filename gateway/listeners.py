"""TCP listeners, optionally shared by several processes through SO_REUSEPORT.

`open_tcp_listeners(port, host=..., reuse_port=False)` is `trio.open_tcp_listeners`, plus:
with `reuse_port`, each socket is bound with SO_REUSEPORT, so the N processes of
`fleet-gateway serve --workers N` each listen on the same address and the kernel spreads new
connections over them (Linux: by a hash of the connection's addresses). Every process must
bind the same concrete port: the supervisor picks it (port 0 resolved once) and passes it on.
"""

from __future__ import annotations

import errno
import socket

import trio


async def open_tcp_listeners(port: int, *, host: str | None = None, backlog: int | None = None,
                             reuse_port: bool = False) -> list[trio.SocketListener]:
    """Listeners on every address `host` resolves to (all of them for None), as trio's.

    Raises:
        OSError: an address cannot be bound (in use without SO_REUSEPORT on the other side).
    """
    if not reuse_port:
        return await trio.open_tcp_listeners(port, host=host, backlog=backlog)
    addresses = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                              flags=socket.AI_PASSIVE)
    listeners: list[trio.SocketListener] = []
    try:
        for family, kind, proto, _, sockaddr in addresses:
            try:
                sock = trio.socket.socket(family, kind, proto)
            except OSError as exc:  # an address family this host lacks (IPv6 off)
                if exc.errno == errno.EAFNOSUPPORT:
                    continue
                raise
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                await sock.bind(sockaddr)
                sock.listen(backlog if backlog is not None else 0xFFFF)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    if not listeners:
        raise OSError(errno.EAFNOSUPPORT, f"no usable address for {host!r}")
    return listeners
