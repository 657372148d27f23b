"""Memory per idle pre-handshake socket: `python -m bench.pending_memory [N]`.

Starts `fleet-gateway serve` (bench PKI, limits lifted as for the other figures, handshake
deadline 120 s so none expires during the run), opens N TCP connections that send nothing,
and prints the gateway's RSS before and after and the difference per socket. A measurement,
never a test: nothing is asserted.
"""

from __future__ import annotations

import socket
import sys
import tempfile
import time
from pathlib import Path

from . import servers
from .pki import make_pki


def main(n: int = 2000) -> None:
    servers.FLEETGATE_BENCH_CONFIG += "handshake_timeout = 120.0\n"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pki = make_pki(work, 1)
        with servers.fleetgate(pki, work, (0, 1)) as server:
            time.sleep(1.0)
            before = server.rss_kib()
            sockets = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(n)]
            time.sleep(2.0)  # let the gateway accept them all
            after = server.rss_kib()
            for sock in sockets:
                sock.close()
    per = (after - before) / n
    print(f"{n} idle pre-handshake sockets: RSS {before} KiB -> {after} KiB, "
          f"{per:.1f} KiB per socket")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
