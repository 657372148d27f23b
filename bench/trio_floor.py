"""The floor under fleetgate's connect and memory figures: a bare trio mTLS server.

It does only what any MQTT server on trio must: accept, the TLS handshake on fleetgate's own
server context (`gateway.tls.build_server_context`: same policy, CRL check and session
ticket), read the CONNECT, answer CONNACK, then wait for DISCONNECT or EOF. No identity, no
jail, no broker, no store, no log. What fleetgate costs above this line is ours to cut; what
this line costs beyond mosquitto is the runtime's (Python, trio's SSLStream).

    python bench/trio_floor.py CA_HOME SERVER_CERT SERVER_KEY   # prints {"listening": PORT}
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

import trio

from gateway.tls import build_server_context

CONNACK = bytes([0x20, 0x02, 0x00, 0x00])


def _packet_length(buf: bytes | bytearray) -> int | None:
    """Total length of the MQTT packet at the start of `buf`, once its header is complete."""
    multiplier, remaining = 1, 0
    for i in range(1, min(len(buf), 5)):
        remaining += (buf[i] & 0x7F) * multiplier
        if not buf[i] & 0x80:
            return 1 + i + remaining
        multiplier *= 128
    return None


async def _serve_one(tcp: trio.SocketStream, context) -> None:
    try:
        stream = trio.SSLStream(tcp, context, server_side=True)
        buf = bytearray()
        while (size := _packet_length(buf)) is None or len(buf) < size:
            data = await stream.receive_some(65536)
            if not data:
                return
            buf += data
        await stream.send_all(CONNACK)
        while await stream.receive_some(65536):  # DISCONNECT (0xE0 0x00) or EOF ends it
            pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        with trio.move_on_after(1):
            await tcp.aclose()


async def main(home: Path, cert: Path, key: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    context = build_server_context(home / "root.crt", home / "crl.pem", cert, key)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=4096)
    print(json.dumps({"listening": listeners[0].socket.getsockname()[1]}), flush=True)
    await trio.serve_listeners(lambda tcp: _serve_one(tcp, context), listeners)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    trio.run(main, *map(Path, sys.argv[1:]))
