"""Child process for the crash test: appends reports and prints each id once committed.

    python store_crash_child.py DATA_DIR NETWORK_UUID PREFIX

Prints `ready` once the model is declared, then `<PREFIX>-<writer>-<n>` lines, each only
after `append_reports` returned for it (i.e. after its transaction committed), forever.
"""

import json
import sys
import uuid
from datetime import UTC, datetime

import trio

from gateway.ingest import ReportRow, parse_model
from gateway.storage import open_sqlite_store

MODEL = {"devices": [{"name": "d", "values": [
    {"name": "v", "permission": "r", "string": {"max": 100}}]}]}


async def main(data_dir: str, network: uuid.UUID, prefix: str) -> None:
    out = sys.stdout
    async with open_sqlite_store(data_dir) as store:
        now = datetime.now(UTC)
        tree = await store.declare_model(network, parse_model(json.dumps(MODEL).encode()), now)
        value = tree.devices[0].values[0].uuid
        out.write("ready\n")
        out.flush()

        async def writer(w: int) -> None:
            n = 0
            while True:
                ids = [f"{prefix}-{w}-{n + k}" for k in range(3)]
                n += 3
                now = datetime.now(UTC)
                await store.append_reports([ReportRow(value, i, now, now) for i in ids])
                out.write("".join(f"{i}\n" for i in ids))
                out.flush()

        async with trio.open_nursery() as nursery:
            for w in range(8):
                nursery.start_soon(writer, w)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], uuid.UUID(sys.argv[2]), sys.argv[3])
