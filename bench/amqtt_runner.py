"""Runs an amqtt broker for the benchmark, under the bench venv's Python (not the project's).

Usage: amqtt_runner.py CONFIG_JSON. amqtt asks for client certificates but accepts a client
without one (CERT_OPTIONAL); the runner makes them required, as for every other system here, so
all systems do the same TLS work.
"""

import asyncio
import json
import logging
import signal
import ssl
import sys

from amqtt.broker import Broker

_make_context = Broker._create_ssl_context


def _required(listener):  # noqa: ANN001, ANN202 (amqtt's own types)
    ctx = _make_context(listener)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


Broker._create_ssl_context = staticmethod(_required)


async def main(config: dict) -> None:
    broker = Broker(config)
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await broker.shutdown()


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main(json.loads(sys.argv[1])))
