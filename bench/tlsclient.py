"""An asyncio mTLS client that can resume a TLS session, for the load generator's storms.

asyncio's own TLS transport cannot offer a saved session (`loop.create_connection` has no
``session`` argument), but `SSLContext.wrap_bio` has one: this client drives an `SSLObject` over
memory buffers on a plain non-blocking socket, as a device's TLS stack would, and keeps the
session the server sent (a TLS 1.3 ticket, or a TLS 1.2 session id) for the next connection.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

RECEIVE = 64 * 1024


class TLSClient:
    """One TLS connection: `connect`, `send`, `receive_exactly`, `close`; `session` after."""

    def __init__(self, context: ssl.SSLContext, session: ssl.SSLSession | None = None) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing,
                                     server_hostname="localhost", session=session)
        self._sock: socket.socket | None = None
        self._loop = asyncio.get_running_loop()

    @property
    def session(self) -> ssl.SSLSession | None:
        return self._tls.session

    @property
    def resumed(self) -> bool:
        return self._tls.session_reused

    async def connect(self, host: str, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        await self._loop.sock_connect(sock, (host, port))
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._pump()
        await self._flush()

    async def send(self, data: bytes) -> None:
        self._tls.write(data)
        await self._flush()

    async def receive_exactly(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            try:
                out += self._tls.read(n - len(out))
            except ssl.SSLWantReadError:
                await self._pump()
            except ssl.SSLZeroReturnError:
                raise ConnectionError("server closed the connection") from None
        return bytes(out)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            assert self._sock is not None
            await self._loop.sock_sendall(self._sock, data)

    async def _pump(self) -> None:
        """Send what TLS wrote, then wait for the server's next bytes."""
        await self._flush()
        assert self._sock is not None
        data = await self._loop.sock_recv(self._sock, RECEIVE)
        if not data:
            raise ConnectionError("server closed the connection")
        self._incoming.write(data)
