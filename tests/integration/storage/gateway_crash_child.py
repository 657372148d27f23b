"""Child process for the gateway crash test: the real gateway with ingest on a data folder.

    python gateway_crash_child.py CA_HOME DATA_DIR

Wires the gateway as `fleet-gateway serve --data DATA_DIR` will (open the store, hand an
`Ingest` to the `Gateway`), listens on 127.0.0.1 port 0, prints the port, serves forever.
"""

import io
import sys

import trio

from gateway.app import Gateway
from gateway.config import load_config
from gateway.ingest import Ingest
from gateway.logs import EventLog
from gateway.server import serve_mqtt
from gateway.storage import open_sqlite_store


async def main(ca_home: str, data_dir: str) -> None:
    async with open_sqlite_store(data_dir) as store:
        config = load_config(None, {"ca_home": ca_home, "mqtt": "127.0.0.1:0"})
        gateway = Gateway(config, log=EventLog(io.StringIO(), truncate_ips=True),
                          ingest=Ingest(store))
        async with trio.open_nursery() as nursery:
            _, port = await nursery.start(serve_mqtt, gateway)
            print(port, flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
