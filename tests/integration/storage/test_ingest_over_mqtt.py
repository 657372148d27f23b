"""The device protocol end to end: paho over mutual TLS -> the real gateway -> Ingest -> SQLite.

Uses the gateway's public seam (`Gateway(config, ingest=...)`, `serve_mqtt`) on 127.0.0.1
port 0, certificates from our own CA (the session `ca_home` fixture), a real SQLite file.
"""

from __future__ import annotations

import io
import json
import queue
import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as paho
import trio

from gateway.app import Gateway
from gateway.broker_state import Message
from gateway.config import load_config
from gateway.ingest import Ingest
from gateway.logs import EventLog
from gateway.mqtt.packets import QoS
from gateway.server import serve_mqtt
from gateway.storage import open_sqlite_store

WAIT = 20.0  # a deadline for "never happened", not a timing assertion
MODEL = {"devices": [{"name": "thermo", "values": [
    {"name": "temp", "permission": "r", "number": {"min": -40, "max": 125, "step": 0.5}},
    {"name": "target", "permission": "rw", "number": {"min": 5, "max": 30, "step": 0.5}},
]}]}


class Device:
    """A paho client in its own network thread, as a firmware would use it."""

    def __init__(self, bundle, port: int, client_id: str) -> None:
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=paho.MQTTv311)
        self.client.tls_set(str(bundle.ca_path), str(bundle.cert_path), str(bundle.key_path))
        self.port = port
        self.messages: queue.Queue = queue.Queue()
        self.acks: queue.Queue = queue.Queue()
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_connect = lambda c, u, f, rc, p: self.acks.put(rc)
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.acks.put(codes)

    async def connect(self, *subscriptions: str) -> None:
        def run() -> None:
            self.client.connect("127.0.0.1", self.port, 60)
            self.client.loop_start()
            assert not self.acks.get(timeout=WAIT).is_failure
            for topic in subscriptions:
                self.client.subscribe(topic, 1)
                self.acks.get(timeout=WAIT)
        await trio.to_thread.run_sync(run)

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Returns once the gateway acknowledged (PUBACK) the message."""
        info = self.client.publish(topic, payload, qos)
        await trio.to_thread.run_sync(lambda: info.wait_for_publish(WAIT))
        assert info.is_published()

    async def message(self, topic: str, *, fresh: bool = False) -> dict:
        """The next message on `topic` (with `fresh`, skip retained copies from before)."""
        def run():
            while True:
                m = self.messages.get(timeout=WAIT)
                if m.topic == topic and not (fresh and m.retain):
                    return m
        m = await trio.to_thread.run_sync(run)
        return {"payload": json.loads(m.payload), "retain": m.retain, "qos": m.qos}

    async def close(self) -> None:
        def run() -> None:
            self.client.disconnect()
            self.client.loop_stop()
        await trio.to_thread.run_sync(run)


@asynccontextmanager
async def running_gateway(ca_home, data_dir: Path):
    """A gateway on 127.0.0.1:0 whose ingest stores into `data_dir`; yields (port, ingest)."""
    async with open_sqlite_store(data_dir) as store:
        ingest = Ingest(store)
        config = load_config(None, {"ca_home": ca_home.path, "mqtt": "127.0.0.1:0"})
        gateway = Gateway(config, log=EventLog(io.StringIO(), truncate_ips=True), ingest=ingest)
        async with trio.open_nursery() as nursery:
            _, port = await nursery.start(serve_mqtt, gateway)
            yield port, ingest, gateway
            nursery.cancel_scope.cancel()


async def test_declare_report_and_control_over_real_mqtt_and_tls(ca_home, make_device,
                                                                 tmp_path):
    bundle = make_device()
    network = bundle.network_uuid
    async with running_gateway(ca_home, tmp_path) as (port, ingest, gateway):
        device = Device(bundle, port, "thermo-1")
        await device.connect("model/+", "model/accepted/+", "errors", "control/#")
        try:
            await device.publish("model", json.dumps(MODEL).encode())
            # each device's value UUIDs first, on its own topic; then the summary
            piece = await device.message("model/accepted/thermo")
            accepted = await device.message("model/accepted")
            tree = accepted["payload"]["network"]
            assert tree["uuid"] == str(network) and accepted["qos"] == 1
            assert piece["payload"]["network"] == str(network) and piece["qos"] == 1
            assert tree["devices"] == [{"uuid": piece["payload"]["device"]["uuid"],
                                        "name": "thermo", "values": 2}]
            temp, target = (uuid.UUID(v["uuid"])
                            for v in piece["payload"]["device"]["values"])

            # every PUBACK means stored: the report is in the store the moment paho has it
            for i in range(20):
                await device.publish("report/thermo/temp", str(i / 2).encode())
                assert (await ingest._store.history(temp, newest_first=True, limit=1)
                        )[0].data == str(i / 2)
            await device.publish(f"report/{temp}", b'{"reports": [{"data": 1}, {"data": 999}]}')
            err = (await device.message("errors"))["payload"]
            assert err["errors"] == [{"code": "RANGE", "index": 1,
                                      "reason": "999 is outside [-40, 125]"}]
            assert len(await ingest._store.history(temp)) == 21

            # a command from an operator reaches the subscribed device, retained
            net, reply = await ingest.control(target, "21.5", datetime.now(UTC))
            assert net == network
            gateway.broker.publish(Message(f"{network}/{reply.topic}", reply.payload,
                                           QoS(reply.qos), reply.retain))
            control = await device.message("control/thermo/target")
            assert control["payload"]["data"] == "21.5"
            assert control["payload"]["value"] == str(target)
        finally:
            await device.close()


async def test_uuids_are_stable_across_reconnects_and_gateway_restarts(ca_home, make_device,
                                                                      tmp_path):
    bundle = make_device()
    trees = []
    for _restart in range(2):
        async with running_gateway(ca_home, tmp_path) as (port, _ingest, _gateway):
            for n in range(2):  # two connections (two client ids) per gateway life
                device = Device(bundle, port, f"c{n}")
                await device.connect("model/+", "model/accepted/+")
                try:
                    await device.publish("model", json.dumps(MODEL).encode())
                    piece = await device.message("model/accepted/thermo", fresh=True)
                    reply = await device.message("model/accepted", fresh=True)
                    trees.append((reply["payload"], piece["payload"]))
                finally:
                    await device.close()
    assert len(trees) == 4 and all(t == trees[0] for t in trees)
