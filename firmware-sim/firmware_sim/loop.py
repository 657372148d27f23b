"""One selector thread drives many paho clients (paho's external-loop API).

A thread per client does not scale to thousands of simulated devices; this loop multiplexes
them instead: paho tells it when a socket opens, closes, or has bytes to write
(`on_socket_open`, `on_socket_close`, `on_socket_register_write`, `..._unregister_write`), the
loop calls `loop_read`/`loop_write` when the selector says so, and `loop_misc` once a second
for keepalive. Timers (report ticks, reconnect backoff) run on the same thread, so device
code needs no lock. Other threads talk to it only through `call_soon_threadsafe`.

TLS note: an SSL socket can hold decrypted bytes the kernel no longer shows as readable, so
after a read the loop keeps reading while `sock.pending()` says there is more.
"""

from __future__ import annotations

import heapq
import itertools
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho

MISC_INTERVAL = 1.0


class Loop:
    """A selector loop with timers; `run()` until `stop()`."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._clients: set[paho.Client] = set()
        self._waker_r, self._waker_w = socket.socketpair()
        self._waker_r.setblocking(False)
        self._waker_w.setblocking(False)
        self._selector.register(self._waker_r, selectors.EVENT_READ, None)
        self._pending: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._stopped = False
        self.errors = 0  # exceptions raised by callbacks (counted, not fatal)

    # -- scheduling ---------------------------------------------------------------------

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), fn))

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._pending.append(fn)
        try:
            self._waker_w.send(b"x")
        except (BlockingIOError, OSError):
            pass

    def stop(self) -> None:
        """Make `run()` return (from any thread)."""
        self.call_soon_threadsafe(self._set_stopped)

    def _set_stopped(self) -> None:
        self._stopped = True

    # -- clients ------------------------------------------------------------------------

    def attach(self, client: paho.Client) -> None:
        """Let this loop drive `client` (before its first connect)."""
        client.on_socket_open = self._on_open
        client.on_socket_close = self._on_close
        client.on_socket_register_write = self._want_write
        client.on_socket_unregister_write = self._done_writing
        self._clients.add(client)

    def detach(self, client: paho.Client) -> None:
        self._clients.discard(client)

    def _on_open(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        try:
            self._selector.register(sock, selectors.EVENT_READ, client)
        except (KeyError, ValueError):
            pass

    def _on_close(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass

    def _want_write(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        try:
            self._selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)
        except (KeyError, ValueError):
            pass

    def _done_writing(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        try:
            self._selector.modify(sock, selectors.EVENT_READ, client)
        except (KeyError, ValueError):
            pass

    # -- running ------------------------------------------------------------------------

    def run(self) -> None:
        """Serve clients and timers until `stop()`."""
        next_misc = time.monotonic() + MISC_INTERVAL
        while not self._stopped:
            now = time.monotonic()
            timeout = next_misc - now
            if self._timers:
                timeout = min(timeout, self._timers[0][0] - now)
            for key, events in self._selector.select(max(0.0, timeout)):
                if key.data is None:
                    self._drain_waker()
                    continue
                self._serve(key.data, key.fileobj, events)
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _, _, fn = heapq.heappop(self._timers)
                self._guard(fn)
            if now >= next_misc:
                next_misc = now + MISC_INTERVAL
                for client in list(self._clients):
                    self._guard(client.loop_misc)

    def _serve(self, client: paho.Client, sock: Any, events: int) -> None:
        if events & selectors.EVENT_READ:
            self._guard(client.loop_read)
            while client.socket() is sock and getattr(sock, "pending", lambda: 0)():
                self._guard(client.loop_read)
        if events & selectors.EVENT_WRITE and client.socket() is sock:
            self._guard(client.loop_write)

    def _drain_waker(self) -> None:
        try:
            while self._waker_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        with self._lock:
            pending, self._pending = self._pending, []
        for fn in pending:
            self._guard(fn)

    def _guard(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception:  # one device's bug must not stop the others
            self.errors += 1

    def close(self) -> None:
        self._selector.close()
        self._waker_r.close()
        self._waker_w.close()


def start_loop(name: str = "firmware-sim-loop") -> tuple[Loop, threading.Thread]:
    """A Loop running in a daemon thread."""
    loop = Loop()
    thread = threading.Thread(target=loop.run, name=name, daemon=True)
    thread.start()
    return loop, thread
