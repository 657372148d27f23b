"""Offline fan-out on disk and at restart: N persistent sessions, M large QoS 1 publishes.

Drives the real broker and journal on a real SQLite data folder (no sockets: the figure is
about storage and start-up, not the wire), then starts a fresh process on that folder and
measures `load_broker_state` (time, peak RSS) and one session's reconnect read.

    python -m bench.queue_fanout [--sessions 1000] [--publishes 10] [--size 100000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import trio


class _Outlet:
    def wake(self) -> None:
        pass

    def close(self, reason, detail=None) -> None:
        pass


def _folder_bytes(data: Path) -> int:
    return sum(p.stat().st_size for p in data.iterdir() if p.is_file())


def _limits() -> dict[str, int]:
    # Generous limits so both versions do the same work (the byte limits would refuse it).
    big = 1 << 40
    return {"max_queued_bytes_per_session": big, "max_queued_bytes_per_network": big}


async def _fill(data: Path, sessions: int, publishes: int, size: int) -> str:
    from gateway.broker_state import Message
    from gateway.mqtt.packets import QoS
    from gateway.persistence import load_broker_state
    from gateway.storage import open_sqlite_store

    net = str(uuid.uuid4())

    async def load(store):
        try:
            return await load_broker_state(store, max_sessions_per_network=sessions,
                                           **_limits())
        except TypeError:  # a version without byte limits
            return await load_broker_state(store, max_sessions_per_network=sessions)

    async with open_sqlite_store(data) as store:
        broker, journal = await load(store)
        for i in range(sessions):
            outlet = _Outlet()
            attached = broker.connect((net, f"s{i}"), False, outlet)
            broker.subscribe(attached.state, f"{net}/#", QoS.AT_LEAST_ONCE)
            broker.disconnect((net, f"s{i}"), outlet)
        await journal.flush()
    before = _folder_bytes(data)
    async with open_sqlite_store(data) as store:
        broker, journal = await load(store)
        for n in range(publishes):
            broker.publish(Message(f"{net}/r/{n}", bytes([n]) * size, QoS.AT_LEAST_ONCE))
            await journal.flush()
        await journal.flush()  # dequeues of copies delivered while committing (none here)
    return json.dumps({"net": net, "folder_before": before, "folder_after": _folder_bytes(data)})


async def _restart(data: Path, net: str) -> str:
    from gateway.persistence import load_broker_state
    from gateway.storage import open_sqlite_store

    async with open_sqlite_store(data) as store:
        t0 = time.perf_counter()
        broker, _ = await load_broker_state(store, max_sessions_per_network=1_000_000)
        loaded = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        state = broker.sessions.get((net, "s0"))
        t0 = time.perf_counter()
        restore = getattr(broker.sessions, "restore", None)
        if restore is not None:
            await restore(state)
        reconnect = time.perf_counter() - t0
        return json.dumps({"load_s": round(loaded, 3), "peak_rss_mb": round(rss / 1024, 1),
                           "s0_queue": len(state.outbox),
                           "s0_read_s": round(reconnect, 3)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--publishes", type=int, default=10)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--restart", nargs=2, metavar=("DATA", "NET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.restart:
        print(trio.run(_restart, Path(args.restart[0]), args.restart[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        filled = json.loads(trio.run(_fill, data, args.sessions, args.publishes, args.size))
        out = subprocess.run([sys.executable, "-m", "bench.queue_fanout", "--restart",
                              str(data), filled["net"]], check=True, capture_output=True,
                             text=True)
        print(json.dumps({**filled, **json.loads(out.stdout)}))


if __name__ == "__main__":
    main()
