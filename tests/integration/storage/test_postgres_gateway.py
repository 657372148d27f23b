"""`fleet-gateway serve --store postgresql://...` as a user runs it: a real process, a real
PostgreSQL, a real paho device over mutual TLS, the HTTPS API; and the start-up refusals
with their exit codes (malformed URL, unreachable server, a data folder already in use)."""

from __future__ import annotations

import http.client
import json
import os
import queue
import shutil
import ssl
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as paho
import psycopg
import pytest
import trio

WAIT = 30.0  # a deadline for "never happened", not a timing assertion
EXE = shutil.which("fleet-gateway", path=str(Path(sys.executable).parent)) or "fleet-gateway"
T0_AUDIT = datetime(2026, 12, 1, tzinfo=UTC)
MODEL = {"devices": [{"name": "thermo", "values": [
    {"name": "temp", "permission": "r", "number": {"min": -40, "max": 125, "step": 0.5}}]}]}


class Serving:
    """A `fleet-gateway serve` child; its JSON log lines (stderr) read by a thread."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        self.proc = subprocess.Popen([EXE, "serve", *args], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[dict] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            try:
                record = json.loads(line)
            except ValueError:
                record = {"event": "<text>", "line": line}
            with self._cond:
                self.lines.append(record)
                self._cond.notify_all()
        with self._cond:
            self.lines.append({"event": "<eof>"})
            self._cond.notify_all()

    def line(self, event: str, key: str | None = None) -> dict:
        def found():
            return next((r for r in self.lines if r["event"] == event
                         and (key is None or key in r)), None)
        with self._cond:
            self._cond.wait_for(lambda: found() or self.lines[-1:] == [{"event": "<eof>"}],
                                timeout=WAIT)
            record = found()
        assert record is not None, self.lines
        return record

    def address(self, key: str) -> tuple[str, int]:
        host, port = self.line("listening", key)[key].rsplit(":", 1)
        return host, int(port)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(WAIT)


@pytest.fixture
def serving():
    started: list[Serving] = []

    def start(*args: str, **kw) -> Serving:
        started.append(Serving(*args, **kw))
        return started[-1]
    yield start
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
        process.proc.wait()


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=WAIT, env=env)


def one_line_error(result: subprocess.CompletedProcess, code: int, text: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleet-gateway: error: "), result.stderr
    assert text in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def device(bundle, port: int, client_id: str) -> paho.Client:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=paho.MQTTv311)
    client.tls_set(str(bundle.ca_path), str(bundle.cert_path), str(bundle.key_path))
    connected: queue.Queue = queue.Queue()
    client.on_connect = lambda c, u, f, rc, p: connected.put(rc)
    client.connect("127.0.0.1", port, 60)
    client.loop_start()
    assert not connected.get(timeout=WAIT).is_failure
    return client


def publish(client: paho.Client, topic: str, payload: bytes) -> None:
    """Returns once the gateway sent PUBACK (QoS 1): after the commit."""
    info = client.publish(topic, payload, 1)
    info.wait_for_publish(WAIT)
    assert info.is_published()


def api_get(ca_home, address: tuple[str, int], path: str):
    ctx = ssl.create_default_context(cafile=str(ca_home.path / "root.crt"))
    operator = ca_home.path / "operator"
    ctx.load_cert_chain(str(operator / "operator.crt"), str(operator / "operator.key"))
    conn = http.client.HTTPSConnection(*address, context=ctx, timeout=WAIT)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        conn.close()


def stored(url: str, network: uuid.UUID) -> list[str]:
    with psycopg.connect(url) as conn:
        return [d for (d,) in conn.execute(
            "SELECT l.data FROM state_log l JOIN states s ON s.id = l.state_id "
            "JOIN networks n ON n.id = s.network_id WHERE n.uuid = %s ORDER BY l.id",
            (network,))]


async def test_serve_with_store_acknowledges_after_commit_and_the_api_reads_it(
        serving, ca_home, make_device, postgres_url):
    bundle = make_device()
    gw = serving("--ca-home", str(ca_home.path), "--mqtt", "127.0.0.1:0",
                 "--http", "127.0.0.1:0", "--store", postgres_url)
    assert gw.line("store_opened")["store"] == postgres_url
    mqtt, api = gw.address("mqtt"), gw.address("http")

    def device_run() -> list[str]:
        client = device(bundle, mqtt[1], "thermo-pg")
        try:
            publish(client, "model", json.dumps(MODEL).encode())
            acked = []
            for i in range(30):
                publish(client, "report/thermo/temp", str(i / 2).encode())
                acked.append(str(i / 2))
                # PUBACK came after the commit: the row is there for any other connection
                assert stored(postgres_url, bundle.network_uuid)[-1] == acked[-1]
            return acked
        finally:
            client.disconnect()
            client.loop_stop()

    acked = await trio.to_thread.run_sync(device_run)
    status, tree = await trio.to_thread.run_sync(
        api_get, ca_home, api, f"/api/v1/networks/{bundle.network_uuid}")
    assert status == 200, tree
    temp = tree["network"]["devices"][0]["values"][0]["uuid"]
    status, page = await trio.to_thread.run_sync(
        api_get, ca_home, api, f"/api/v1/values/{temp}/reports?limit=100")
    assert status == 200, page
    assert sorted(r["data"] for r in page["reports"]) == sorted(float(a) for a in acked)
    assert await trio.to_thread.run_sync(gw.stop) == 0


def test_a_malformed_store_url_is_one_line_and_exit_8(ca_home):
    for url in ("mysql://db/fleet", "postgresql://u@db:notaport/fleet", "postgresql://u@db/"):
        one_line_error(run("serve", "--ca-home", str(ca_home.path), "--store", url), 8,
                       "store URL")
    env = {**os.environ, "FLEETGATE_STORE": "nonsense"}
    one_line_error(run("serve", "--ca-home", str(ca_home.path), env=env), 8, "store URL")
    one_line_error(run("check-config", "--ca-home", str(ca_home.path), "--store", "x://"), 8,
                   "store URL")


def test_an_unreachable_store_at_start_is_one_line_and_exit_9(ca_home, tmp_path):
    url = f"postgresql://fleetgate@/fleetgate?host={tmp_path}&port=1&connect_timeout=2"
    one_line_error(run("serve", "--ca-home", str(ca_home.path), "--mqtt", "127.0.0.1:0",
                       "--store", url), 9, "cannot reach PostgreSQL")


def test_a_second_gateway_on_the_same_data_folder_refuses_with_exit_13(serving, ca_home,
                                                                        tmp_path):
    data = tmp_path / "data"
    first = serving("--ca-home", str(ca_home.path), "--mqtt", "127.0.0.1:0", "--http", "off",
                    "--data", str(data))
    first.line("store_opened")
    second = run("serve", "--ca-home", str(ca_home.path), "--mqtt", "127.0.0.1:0",
                 "--http", "off", "--data", str(data))
    one_line_error(second, 13, f"data folder {data} is in use")
    assert f"pid {first.proc.pid}" in second.stderr
    # Commands that only read keep working beside it.
    assert run("audit", "verify", "--data", str(data)).returncode == 0
    backup = run("backup", "create", str(tmp_path / "copy"), "--data", str(data))
    assert backup.returncode == 0, backup.stderr
    # ... a restore does not (it would replace the file under the running gateway)
    restore = run("backup", "restore", str(tmp_path / "copy"), "--data", str(data))
    assert restore.returncode == 5 and "in use" in restore.stderr
    assert first.stop() == 0
    # once it stopped, the folder is free
    third = serving("--ca-home", str(ca_home.path), "--mqtt", "127.0.0.1:0", "--http", "off",
                    "--data", str(data))
    third.line("store_opened")


def test_audit_verify_reads_the_postgresql_store_and_check_config_masks_its_password(
        ca_home, postgres_url):
    from gateway.storage.audit import AuditEvent, AuditRecord
    from gateway.storage.postgres import open_postgres_store

    async def write() -> None:
        async with open_postgres_store(postgres_url) as store:
            for n in range(3):
                await store.append_audit(AuditRecord("alice", T0_AUDIT, (
                    AuditEvent("erase", f"net-{n}"),)))
    trio.run(write)
    done = run("audit", "verify", "--store", postgres_url)
    assert done.returncode == 0 and "3 entries" in done.stdout, done.stderr
    shown = run("audit", "show", "--json", env={**os.environ, "FLEETGATE_STORE": postgres_url})
    assert [json.loads(line)["subject"] for line in shown.stdout.splitlines()] == [
        "net-0", "net-1", "net-2"]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
    broken = run("audit", "verify", "--store", postgres_url)
    assert broken.returncode == 7 and "entry 2" in broken.stderr
    secret = "postgresql://fleetgate:s3cret@db.example:5432/fleetgate"
    checked = run("check-config", "--ca-home", str(ca_home.path), "--store", secret)
    assert checked.returncode == 0, checked.stderr
    assert "s3cret" not in checked.stdout and "fleetgate:***@db.example" in checked.stdout
