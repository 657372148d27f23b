"""One SUBSCRIBE against many retained messages: time to the SUBACK and the event loop's
longest stall, with a real gateway (in-process, real TLS on 127.0.0.1) and a raw MQTT client.

The network holds RETAINED retained messages (`r/<j>/<i>`, 100 per `r/<j>`, seeded in the
broker directly); one device sends ONE SUBSCRIBE of FILTERS filters, acknowledges every
QoS 1 message it gets and stops when EXPECTED arrived or nothing came for IDLE seconds.
A trio task sleeping 1 ms records the longest gap between its wake-ups: how long the whole
gateway (every other device) was frozen.

Modes: `same` = FILTERS x `#` (the attack), `distinct` = `r/<k>/#` for k < FILTERS (only 100
of them exist). Limits the gateway does not know (an older version) are not passed.

Usage: python -m bench.subscribe_storm [--mode same|distinct] [--filters 1000]
           [--retained 10000] [--max-filters N] [--max-subs N]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import ssl
import sys
import tempfile
from pathlib import Path

import trio

from bench.pki import make_pki
from gateway.app import Gateway
from gateway.broker_state import Message
from gateway.config import GatewayConfig, load_config
from gateway.logs import EventLog
from gateway.mqtt.codec import PacketReader
from gateway.mqtt.encoder import encode
from gateway.mqtt.packets import Connect, PubAck, Publish, QoS, SubAck, Subscribe
from gateway.server import serve_mqtt

IDLE = 5.0


async def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="substorm-"))
    pki = make_pki(work, 1)
    device = pki.devices[0]
    known = {f.name for f in dataclasses.fields(GatewayConfig)}
    overrides = {"ca_home": pki.home, "mqtt": "127.0.0.1:0"}
    for name, value in (("max_filters_per_subscribe", args.max_filters),
                        ("max_subscriptions_per_session", args.max_subs)):
        if value is not None and name in known:
            overrides[name] = value
    config = load_config(None, overrides)
    gateway = Gateway(config, log=EventLog(io.StringIO(), truncate_ips=True))
    for i in range(args.retained):
        topic = f"{device.uuid}/r/{i // 100}/{i}"
        gateway.broker.publish(Message(topic, b"x" * 100, QoS.AT_LEAST_ONCE, True))
    out: dict = {}
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(serve_mqtt, gateway)
        stall = {"max": 0.0, "on": False}

        async def ticker() -> None:
            last = trio.current_time()
            while True:
                await trio.sleep(0.001)
                now = trio.current_time()
                if stall["on"]:
                    stall["max"] = max(stall["max"], now - last)
                last = now

        nursery.start_soon(ticker)
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.root))
        ctx.load_cert_chain(str(device.cert), str(device.key))
        stream = trio.SSLStream(await trio.open_tcp_stream(host, port), ctx,
                                server_hostname="127.0.0.1")
        await stream.do_handshake()
        reader = PacketReader(max_packet_size=16 * 1024 * 1024)

        async def receive():
            while True:
                packet = reader.next_packet()
                if packet is not None:
                    return packet
                data = await stream.receive_some(65536)
                if not data:
                    return None
                reader.feed(data)

        await stream.send_all(encode(Connect("storm", keepalive=0)))
        await receive()
        if args.mode == "same":
            filters = tuple(("#", QoS.AT_LEAST_ONCE) for _ in range(args.filters))
        else:
            filters = tuple((f"r/{k}/#", QoS.AT_LEAST_ONCE) for k in range(args.filters))
        stall["on"] = True
        start = trio.current_time()
        await stream.send_all(encode(Subscribe(1, filters)))
        got = 0
        suback_at = None
        suback_stall = 0.0
        granted = 0
        while True:
            packet = None
            # Client and gateway share this process: wait out a frozen loop for the SUBACK.
            with trio.move_on_after(IDLE if suback_at is not None else 900):
                packet = await receive()
            if packet is None:
                break
            if isinstance(packet, SubAck):
                suback_at = trio.current_time() - start
                suback_stall = stall["max"]
                granted = sum(1 for c in packet.return_codes if c != 0x80)
            elif isinstance(packet, Publish):
                got += 1
                if packet.packet_id is not None:
                    await stream.send_all(encode(PubAck(packet.packet_id)))
        done = trio.current_time() - start - IDLE
        out = {"mode": args.mode, "filters": args.filters, "retained": args.retained,
               "granted": granted, "suback_s": round(suback_at, 3),
               "stall_until_suback_s": round(suback_stall, 3),
               "retained_received": got, "delivery_s": round(done, 3),
               "stall_max_s": round(stall["max"], 3), "overrides": {
                   k: v for k, v in overrides.items() if k.startswith("max_")}}
        nursery.cancel_scope.cancel()
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("same", "distinct"), default="same")
    parser.add_argument("--filters", type=int, default=1000)
    parser.add_argument("--retained", type=int, default=10_000)
    parser.add_argument("--max-filters", type=int)
    parser.add_argument("--max-subs", type=int)
    print(trio.run(run, parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
