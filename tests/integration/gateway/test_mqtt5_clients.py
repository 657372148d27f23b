"""MQTT 5 with the standard clients against the real gateway (real TLS, ingest into a real
SQLite file): paho-mqtt `protocol=MQTTv5`, `mosquitto_pub/sub -V mqttv5` (Debian's
mosquitto-clients) and MQTT.js `protocolVersion: 5` (Node from Debian, `mqtt` from npm,
installed into tests/integration/gateway/mqttjs/ when missing). A report the gateway refuses
gets its PUBACK reason code and reason string; 3.1.1 and 5 devices share a jail."""

from __future__ import annotations

import io
import json
import queue
import shutil
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import trio
from gwhelpers import WAIT, Creds, LogRecords, PahoClient, Running
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.app import Gateway
from gateway.config import load_config
from gateway.ingest import Ingest
from gateway.logs import EventLog
from gateway.server import serve_mqtt
from gateway.storage import open_sqlite_store

MQTTJS = Path(__file__).parent / "mqttjs"
MODEL = {"devices": [{"name": "thermo", "values": [
    {"name": "temp", "permission": "r", "number": {"min": -40, "max": 125, "step": 0.1}}]}]}
RANGE = 0x83  # PUBACK: implementation specific error, the gateway's code for a range error

needs_mosquitto = pytest.mark.skipif(
    shutil.which("mosquitto_pub") is None or shutil.which("mosquitto_sub") is None,
    reason="Debian's mosquitto-clients is not installed (make test installs it)")


@pytest.fixture
async def running(nursery, pki, tmp_path) -> Running:
    """A gateway with ingest into a SQLite store, on 127.0.0.1 port 0."""

    async def serve(task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with open_sqlite_store(tmp_path / "data") as store:
            config = load_config(None, {"ca_home": pki.path, "mqtt": "127.0.0.1:0",
                                        "max_sessions_per_network": 3})
            logs = LogRecords()
            log = EventLog(io.StringIO(), truncate_ips=config.truncate_ip)
            log.add_listener(logs)
            gateway = Gateway(config, log=log, ingest=Ingest(store))
            async with trio.open_nursery() as inner:
                host, port = await inner.start(serve_mqtt, gateway)
                task_status.started(Running(gateway, host, port, logs))

    return await nursery.start(serve)


class Paho5:
    """A paho-mqtt MQTT 5 client in its own network thread; callbacks feed queues."""

    def __init__(self, running: Running, creds: Creds, client_id: str = "",
                 session_expiry: int | None = None) -> None:
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=paho.MQTTv5)
        self.client.tls_set(str(creds.ca), str(creds.cert), str(creds.key))
        self.running = running
        self.session_expiry = session_expiry
        self.connacks: queue.Queue = queue.Queue()
        self.acks: dict[int, tuple[Any, Any]] = {}
        self.acked = threading.Condition()
        self.messages: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.disconnects: queue.Queue = queue.Queue()
        c = self.client
        c.on_connect = lambda cl, u, flags, rc, props: self.connacks.put((flags, rc, props))
        c.on_message = lambda cl, u, m: self.messages.put(m)
        c.on_subscribe = lambda cl, u, mid, codes, props: self.subacks.put(codes)
        c.on_disconnect = lambda cl, u, flags, rc, props: self.disconnects.put((rc, props))
        c.on_publish = self._on_publish

    def _on_publish(self, _c, _u, mid, rc, props) -> None:
        with self.acked:
            self.acks[mid] = (rc, props)
            self.acked.notify_all()

    async def connect(self):
        """(flags, reason code, CONNACK properties)."""
        props = None
        if self.session_expiry is not None:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry

        def run():
            self.client.connect(self.running.host, self.running.port, 60,
                                clean_start=self.session_expiry is None, properties=props)
            self.client.loop_start()
            return self.connacks.get(timeout=WAIT)

        return await trio.to_thread.run_sync(run)

    async def subscribe(self, topic: str, qos: int = 1):
        self.client.subscribe(topic, qos)
        return await trio.to_thread.run_sync(lambda: self.subacks.get(timeout=WAIT))

    async def publish(self, topic: str, payload: bytes, qos: int = 1):
        """The PUBACK's (reason code, properties) for QoS 1."""
        info = self.client.publish(topic, payload, qos)

        def wait():
            with self.acked:
                assert self.acked.wait_for(lambda: info.mid in self.acks, WAIT)
                return self.acks.pop(info.mid)

        return await trio.to_thread.run_sync(wait)

    async def message(self):
        return await trio.to_thread.run_sync(lambda: self.messages.get(timeout=WAIT))

    async def close(self) -> None:
        def run():
            self.client.disconnect()
            self.client.loop_stop()

        await trio.to_thread.run_sync(run)


async def _declared(running: Running, creds: Creds) -> None:
    """Declare MODEL for the network of `creds` (a short-lived MQTT 5 device)."""
    device = Paho5(running, creds, f"declare-{uuid.uuid4().hex[:6]}")
    assert (await device.connect())[1] == "Success"
    rc, _ = await device.publish("model", json.dumps(MODEL).encode())
    assert rc == "Success"
    await device.close()


# -- paho ------------------------------------------------------------------------------

async def test_paho_mqtt5_report_gets_puback_success_or_0x83_with_the_rule(running, pki):
    creds = pki.device()
    await _declared(running, creds)
    device = Paho5(running, creds, "paho5")
    _, rc, _ = await device.connect()
    assert rc == "Success"
    rc, props = await device.publish("report/thermo/temp", b"21.5")
    assert rc.value == 0x00
    rc, props = await device.publish("report/thermo/temp", b"900")
    assert rc.value == RANGE
    assert "900" in props.ReasonString and "125" in props.ReasonString
    await device.close()


async def test_paho_mqtt5_and_mqtt311_devices_of_one_jail_exchange_both_ways(running, pki):
    five_creds = pki.device()
    old_creds = pki.device(network=uuid.UUID(five_creds.network))
    five = Paho5(running, five_creds, "five")
    old = PahoClient(running, old_creds, "three-one-one")
    assert (await five.connect())[1] == "Success"
    assert (await old.connect())[1] == 0
    assert [c.value for c in await five.subscribe("to/five")] == [1]
    assert await old.subscribe("to/old", 1)
    await old.publish("to/five", b"from 3.1.1", 1)
    got = await five.message()
    assert (got.topic, got.payload, got.qos) == ("to/five", b"from 3.1.1", 1)
    rc, _ = await five.publish("to/old", b"from 5")
    assert rc.value in (0x00, 0x10)  # success (0x10: none matched, impossible here)
    got = await old.message()
    assert (got.topic, got.payload) == ("to/old", b"from 5")
    await five.close()
    await old.close()


async def test_paho_mqtt5_device_of_a_barred_network_reads_banned(nursery, pki, tmp_path):
    creds = pki.device()
    config = load_config(None, {"ca_home": pki.path, "mqtt": "127.0.0.1:0"})
    logs = LogRecords()
    log = EventLog(io.StringIO())
    log.add_listener(logs)
    gateway = Gateway(config, log=log, bars={uuid.UUID(creds.network)})
    host, port = await nursery.start(serve_mqtt, gateway)
    device = Paho5(Running(gateway, host, port, logs), creds, "barred5")
    _, rc, props = await device.connect()
    assert rc.value == 0x8A  # Banned
    assert "erased" in props.ReasonString
    await device.close()
    await logs.wait("refused", cause="BARRED")


async def test_paho_mqtt5_session_over_the_network_cap_reads_quota_exceeded(running, pki):
    creds = pki.device()
    kept = []
    for n in range(3):  # max_sessions_per_network = 3: persistent sessions fill it
        device = Paho5(running, creds, f"keeper-{n}", session_expiry=3600)
        assert (await device.connect())[1] == "Success"
        kept.append(device)
    extra = Paho5(running, creds, "one-too-many", session_expiry=3600)
    _, rc, _ = await extra.connect()
    assert rc.value == 0x97  # Quota exceeded
    await extra.close()
    for device in kept:
        await device.close()


# -- mosquitto -------------------------------------------------------------------------

def _mosquitto(tool: str, running: Running, creds: Creds, *args: str) -> list[str]:
    return [tool, "-h", "127.0.0.1", "-p", str(running.port), "-V", "mqttv5",
            "--cafile", str(creds.ca), "--cert", str(creds.cert), "--key", str(creds.key),
            *args]


async def _pub(running: Running, creds: Creds, *args: str) -> subprocess.CompletedProcess:
    with trio.fail_after(WAIT):
        return await trio.run_process(_mosquitto("mosquitto_pub", running, creds, "-d", *args),
                                      capture_stdout=True, capture_stderr=True, check=False)


@needs_mosquitto
async def test_mosquitto_pub_mqttv5_reads_puback_0x00_then_0x83_with_a_reason_string(
        running, pki):
    creds = pki.device()
    await _pub(running, creds, "-q", "1", "-t", "model", "-m", json.dumps(MODEL))
    good = await _pub(running, creds, "-q", "1", "-t", "report/thermo/temp", "-m", "21.5")
    assert good.returncode == 0, good.stderr
    assert b"received PUBACK (Mid: 1, RC:0)" in good.stdout
    bad = await _pub(running, creds, "-q", "1", "-t", "report/thermo/temp", "-m", "900")
    assert f"received PUBACK (Mid: 1, RC:{RANGE})".encode() in bad.stdout, bad.stdout
    # mosquitto_pub names the code, then prints the reason string on the next line.
    warning, reason = bad.stderr.decode().splitlines()[:2]
    assert warning == "Warning: Publish 1 failed: Implementation specific error."
    assert "900" in reason and "125" in reason


@needs_mosquitto
async def test_mosquitto_sub_mqttv5_receives_from_mqttv5_and_mqttv311_publishers(
        running, pki):
    creds = pki.device()
    sub = await trio.lowlevel.open_process(
        _mosquitto("mosquitto_sub", running, creds, "-i", "sub5", "-t", "news/#", "-q", "1",
                   "-C", "2", "-W", str(int(WAIT)), "-v"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        await running.logs.wait("subscribed", client_id="sub5")
        five = await _pub(running, creds, "-q", "1", "-t", "news/five", "-m", "hello 5")
        assert five.returncode == 0, five.stderr
        args = _mosquitto("mosquitto_pub", running, creds, "-q", "1", "-t", "news/old",
                          "-m", "hello 3.1.1")
        args[args.index("mqttv5")] = "mqttv311"
        with trio.fail_after(WAIT):
            await trio.run_process(args, capture_stdout=True, capture_stderr=True)
        with trio.fail_after(WAIT):
            out = b""
            while out.count(b"\n") < 2:
                chunk = await sub.stdout.receive_some()
                if not chunk:
                    break
                out += chunk
            await sub.wait()
    finally:
        if sub.returncode is None:
            sub.kill()
            await sub.wait()
    assert out.decode().splitlines() == ["news/five hello 5", "news/old hello 3.1.1"]


# -- MQTT.js ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def mqttjs() -> Path:
    """The MQTT.js driver script, with `mqtt` installed from npm when missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Debian's nodejs/npm are not installed (make test installs them)")
    if not (MQTTJS / "node_modules" / "mqtt").is_dir():
        subprocess.run(["npm", "install", "--no-package-lock", "--no-audit", "--no-fund"],
                       cwd=MQTTJS, check=True, capture_output=True, timeout=300)
    return MQTTJS / "client.mjs"


async def _mqttjs(script: Path, running: Running, creds: Creds, **spec: Any) -> list[dict]:
    spec = {"host": "127.0.0.1", "port": running.port, "ca": str(creds.ca),
            "cert": str(creds.cert), "key": str(creds.key), "protocolVersion": 5, **spec}
    with trio.fail_after(WAIT + 5):
        done = await trio.run_process(["node", str(script), json.dumps(spec)],
                                      capture_stdout=True, capture_stderr=True, check=False)
    events = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert events, done.stderr.decode()
    return events


async def test_mqttjs_v5_reads_puback_success_or_0x83_with_the_rule(running, pki, mqttjs):
    creds = pki.device()
    await _declared(running, creds)
    events = await _mqttjs(mqttjs, running, creds, clientId="mqttjs5", publish=[
        {"topic": "report/thermo/temp", "payload": "21.5"},
        {"topic": "report/thermo/temp", "payload": "900"}])
    assert events[0]["event"] == "connack" and events[0]["reasonCode"] == 0
    good, bad = [e for e in events if e["event"] == "puback"]
    assert (good["refused"], good["reasonCode"]) == (False, 0)
    assert (bad["refused"], bad["reasonCode"]) == (True, RANGE)
    assert "900" in bad["reasonString"] and "125" in bad["reasonString"]
    assert events[-1]["event"] == "done"


async def test_mqttjs_v5_and_a_paho_mqtt311_device_exchange_both_ways(running, pki, mqttjs):
    js_creds = pki.device()
    old = PahoClient(running, pki.device(network=uuid.UUID(js_creds.network)), "old")
    assert (await old.connect())[1] == 0
    assert await old.subscribe("to/old", 1)

    async def publish_when_ready() -> None:
        await running.logs.wait("subscribed", client_id="mqttjs-peer")
        await old.publish("to/js", b"from 3.1.1", 1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(publish_when_ready)
        events = await _mqttjs(mqttjs, running, js_creds, clientId="mqttjs-peer",
                               subscribe=["to/js"], expect=1,
                               publish=[{"topic": "to/old", "payload": "from 5"}])
    got = await old.message()
    assert (got.topic, got.payload) == ("to/old", b"from 5")
    [message] = [e for e in events if e["event"] == "message"]
    assert (message["topic"], message["payload"]) == ("to/js", "from 3.1.1")
    await old.close()
