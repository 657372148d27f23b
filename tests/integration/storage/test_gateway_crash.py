"""The issue's crash test: a publisher records each PUBACK, the gateway is SIGKILLed
mid-stream and restarted on the same data folder, and every acknowledged report is stored.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pytest
import trio

from gateway.storage import open_sqlite_store

CHILD = Path(__file__).with_name("gateway_crash_child.py")
WAIT = 30.0
MODEL = {"devices": [{"name": "d", "values": [
    {"name": "v", "permission": "r", "string": {"max": 40}}]}]}


def publish_until_killed(bundle, port: int, prefix: str, kill_after: int, kill) -> list[str]:
    """Declare, then publish QoS 1 reports as fast as paho allows (up to 200 unacknowledged);
    once `kill_after` were acknowledged, kill the gateway and wait for the connection to drop.
    Returns the payloads whose PUBACK arrived."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=prefix,
                         protocol=paho.MQTTv311)
    client.tls_set(str(bundle.ca_path), str(bundle.cert_path), str(bundle.key_path))
    client.max_inflight_messages_set(50)
    sent: dict[int, str] = {}
    acked: list[str] = []
    lock = threading.Lock()
    connected, gone, room = threading.Event(), threading.Event(), threading.Semaphore(200)

    early: set[int] = set()  # PUBACKs that beat `publish()` returning their mid

    def on_publish(c, u, mid, rc, p):
        with lock:
            if mid in sent:
                acked.append(sent.pop(mid))
            else:
                early.add(mid)
        room.release()

    client.on_connect = lambda c, u, f, rc, p: connected.set()
    client.on_disconnect = lambda *a: gone.set()
    client.on_publish = on_publish
    client.connect("127.0.0.1", port, 60)
    client.loop_start()
    try:
        assert connected.wait(WAIT)
        client.publish("model", json.dumps(MODEL).encode(), 1).wait_for_publish(WAIT)
        n = 0
        while len(acked) < kill_after:
            assert room.acquire(timeout=WAIT), "no PUBACK for a long time"
            payload = f"{prefix}-{n}"
            # not under `lock`: paho calls on_publish holding its own mutex (lock order)
            info = client.publish("report/d/v", payload.encode(), 1)
            with lock:
                if info.mid in early:
                    early.discard(info.mid)
                    acked.append(payload)
                else:
                    sent[info.mid] = payload
            n += 1
        # Up to 200 reports are in flight right now (sent, not yet acknowledged): kill the
        # gateway in the middle of them; acknowledgements already on the wire still count.
        kill()
        assert gone.wait(WAIT), "paho did not notice the gateway's death"
    finally:
        client.loop_stop()
    return acked


@pytest.mark.slow
async def test_every_acknowledged_report_survives_a_gateway_sigkill(ca_home, make_device,
                                                                   tmp_path):
    bundle = make_device()
    data = tmp_path / "data"
    acked: list[str] = []
    for attempt, kill_after in enumerate((200, 1000, 500)):
        proc = await trio.lowlevel.open_process(
            [sys.executable, str(CHILD), str(ca_home.path), str(data)], stdout=subprocess.PIPE)
        try:
            with trio.fail_after(WAIT):
                line = b""
                while not line.endswith(b"\n"):
                    chunk = await proc.stdout.receive_some()
                    assert chunk, "the gateway exited before listening"
                    line += chunk
            port = int(line)
            acked += await trio.to_thread.run_sync(
                publish_until_killed, bundle, port, f"run{attempt}", kill_after,
                lambda p=proc: p.send_signal(signal.SIGKILL))
            with trio.fail_after(WAIT):
                await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == -signal.SIGKILL
        async with open_sqlite_store(data) as store:
            tree = await store.get_tree(uuid.UUID(str(bundle.network_uuid)))
            value = tree.devices[0].values[0].uuid
            stored = {r.data for r in await store.history(value, limit=10**7)}
        missing = [a for a in acked if a not in stored]
        assert not missing, f"attempt {attempt}: {len(missing)} of {len(acked)} acked lost"
        assert len(acked) >= kill_after
