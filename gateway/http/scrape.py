"""A plain-HTTP listener for Prometheus: GET /metrics and nothing else.

The HTTPS API serves /metrics to operators (a client certificate each); a Prometheus
scraper usually has none. With `metrics = "HOST:PORT"` in the gateway's config the same
exposition is also served here, without TLS: bind it to localhost or a monitoring network,
never to the devices' network (the figures are operational, not personal, but they are the
fleet's). Each connection is one request under a short deadline with a small head limit,
and at most `MAX_CONNECTIONS` are served at once; more are closed at accept.
"""

from __future__ import annotations

from collections.abc import Callable

import h11
import trio

from .metrics import CONTENT_TYPE

MAX_CONNECTIONS = 16
DEADLINE = 5.0  # seconds for one whole request and its answer
MAX_HEAD = 8 * 1024
RECEIVE_SIZE = 8 * 1024


async def serve_scrape(address: tuple[str, int], exposition: Callable[[], bytes], *,
                       log=None, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve `exposition()` at GET /metrics on `address` until cancelled.

    `task_status.started((host, port))` after the `listening` log line (port 0: any free).
    """
    host, port = address
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:  # named, so the CLI can say which listener failed
        raise OSError(exc.errno, exc.strerror, f"{host}:{port}") from exc
    bound = listeners[0].socket.getsockname()[:2]
    if log is not None:
        log.emit("listening", metrics=f"{bound[0]}:{bound[1]}")
    task_status.started(bound)
    busy = trio.CapacityLimiter(MAX_CONNECTIONS)

    async def handle(stream: trio.SocketStream) -> None:
        try:
            busy.acquire_nowait()
        except trio.WouldBlock:
            await trio.aclose_forcefully(stream)
            return
        try:
            with trio.move_on_after(DEADLINE):
                await _answer(stream, exposition)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        finally:
            busy.release()
            await trio.aclose_forcefully(stream)

    await trio.serve_listeners(handle, listeners)


async def _answer(stream: trio.SocketStream, exposition: Callable[[], bytes]) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(RECEIVE_SIZE))
            continue
        break
    if not isinstance(event, h11.Request):
        return
    if event.method == b"GET" and event.target.split(b"?")[0] == b"/metrics":
        status, ctype, body = 200, CONTENT_TYPE.encode(), exposition()
    else:
        status, ctype, body = 404, b"text/plain", b"only GET /metrics is served here\n"
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
    await stream.send_all(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
