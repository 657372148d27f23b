"""One selector thread drives many paho clients (paho's external-loop API).

A thread per client does not scale to thousands of simulated devices; this loop multiplexes
them instead: paho tells it when a socket opens, closes, or has bytes to write
(`on_socket_open`, `on_socket_close`, `on_socket_register_write`, `..._unregister_write`), the
loop calls `loop_read`/`loop_write` when the selector says so, and `loop_misc` once a second
for keepalive. Timers (report ticks, reconnect backoff) run on the same thread, so device
code needs no lock. Other threads talk to it only through `call_soon_threadsafe`.

TLS note: an SSL socket can hold decrypted bytes the kernel no longer shows as readable, so
after a read the loop keeps reading while `sock.pending()` says there is more.

Connecting is the one blocking step (paho's `reconnect()` does the TCP connect and the TLS
handshake synchronously). Done on the loop thread, a slow gateway would stall every other
device and make them miss the gateway's CONNECT deadline, so `connect_in_background` runs it
on a small pool of connector threads; paho's socket callbacks from those threads are handed
to the loop thread in order.
"""

from __future__ import annotations

import heapq
import itertools
import selectors
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import paho.mqtt.client as paho

MISC_INTERVAL = 1.0
TIMERS_PER_TURN = 256  # timers run between two selects: I/O is never starved by a burst
CONNECTORS = 8  # threads doing blocking connects + TLS handshakes (OpenSSL drops the GIL)


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
        self._thread_id: int | None = None
        self._connectors: ThreadPoolExecutor | None = None
        self._connecting: set[paho.Client] = set()
        self.errors = 0  # exceptions raised by callbacks (counted, not fatal)
        self.last_error = ""

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

    def _on_loop_thread(self, fn: Callable[[], None]) -> bool:
        """Run `fn` now if on the loop thread (True), else queue it there (False)."""
        if threading.get_ident() == self._thread_id:
            return True
        self.call_soon_threadsafe(fn)
        return False

    def connect_in_background(self, client: paho.Client,
                              failed: Callable[[BaseException], None]) -> None:
        """`client.reconnect()` on a connector thread; `failed(exc)` on the loop thread."""
        if self._connectors is None:
            self._connectors = ThreadPoolExecutor(CONNECTORS, "firmware-sim-connect")
        self._connecting.add(client)

        def work() -> None:
            try:
                client.reconnect()
            except Exception as exc:  # reported to the device, on the loop thread
                self.call_soon_threadsafe(lambda error=exc: failed(error))
            finally:
                self.call_soon_threadsafe(lambda: self._connecting.discard(client))

        self._connectors.submit(work)

    def _on_open(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        if not self._on_loop_thread(lambda: self._on_open(client, _userdata, sock)):
            return
        try:
            self._selector.register(sock, selectors.EVENT_READ, client)
        except (KeyError, ValueError):
            pass

    def _on_close(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        if not self._on_loop_thread(lambda: self._on_close(client, _userdata, sock)):
            return
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass

    def _want_write(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        if not self._on_loop_thread(lambda: self._want_write(client, _userdata, sock)):
            return
        try:
            self._selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)
        except (KeyError, ValueError):
            pass

    def _done_writing(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        if not self._on_loop_thread(lambda: self._done_writing(client, _userdata, sock)):
            return
        try:
            self._selector.modify(sock, selectors.EVENT_READ, client)
        except (KeyError, ValueError):
            pass

    # -- running ------------------------------------------------------------------------

    def run(self) -> None:
        """Serve clients and timers until `stop()`."""
        self._thread_id = threading.get_ident()
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
            for _ in range(TIMERS_PER_TURN):
                if not self._timers or self._timers[0][0] > now:
                    break
                _, _, fn = heapq.heappop(self._timers)
                self._guard(fn)
            if now >= next_misc:
                next_misc = now + MISC_INTERVAL
                for client in list(self._clients):
                    if client not in self._connecting:  # its socket is not ours yet
                        self._guard(client.loop_misc)
        if self._connectors is not None:
            self._connectors.shutdown(wait=False, cancel_futures=True)

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
        except Exception as exc:  # one device's bug must not stop the others
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"

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
