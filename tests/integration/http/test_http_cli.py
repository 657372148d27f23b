"""`fleet-gateway serve --data DIR --http 127.0.0.1:0`: the API runs beside MQTT in the same
process, its port logged in a `listening` line; SIGTERM stops both."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import trio
from httphelpers import Client, client_context
from prometheus_client.parser import text_string_to_metric_families

EXE = shutil.which("fleet-gateway", path=str(Path(sys.executable).parent)) or "fleet-gateway"


def _serve(ca_home, *args: str) -> subprocess.Popen:
    return subprocess.Popen([EXE, "serve", "--ca-home", str(ca_home.path), "--mqtt",
                             "127.0.0.1:0", *args], stderr=subprocess.PIPE, text=True)


def _http_line(proc: subprocess.Popen) -> dict:
    assert proc.stderr is not None
    for line in proc.stderr:
        record = json.loads(line)
        if record["event"] == "listening" and "http" in record:
            return record
    raise AssertionError("the gateway ended without an http listening line")


async def test_serve_runs_the_api_on_the_logged_port_and_stops_on_sigterm(ca_home, tmp_path):
    proc = _serve(ca_home, "--http", "127.0.0.1:0", "--data", str(tmp_path / "data"))
    try:
        record = await trio.to_thread.run_sync(_http_line, proc)
        host, port = record["http"].rsplit(":", 1)
        assert int(port) > 0
        root = ca_home.path / "root.crt"
        op = ca_home.path / "operator"
        anonymous = Client(host, int(port), client_context(root))
        assert (await anonymous.get("/healthz")).status == 200
        operator = Client(host, int(port), client_context(root, op / "operator.crt",
                                                          op / "operator.key"))
        answer = await operator.get("/api/v1/networks")
        assert answer.status == 200 and answer.json["networks"] == []
        metrics = await operator.get("/metrics")
        assert b"fleetgate_store_commits_total" in metrics.body
        proc.send_signal(signal.SIGTERM)
        assert await trio.to_thread.run_sync(lambda: proc.wait(30)) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_an_http_port_in_use_is_one_line_and_exit_4(ca_home, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _serve(ca_home, "--http", f"127.0.0.1:{port}", "--data", str(tmp_path / "d"))
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 4
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"fleet-gateway: error: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in err


def test_a_bad_http_address_is_a_config_error(ca_home):
    proc = _serve(ca_home, "--http", "nowhere")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3 and "bad listener address 'nowhere'" in err


def _listening(proc: subprocess.Popen, key: str) -> str:
    assert proc.stderr is not None
    for line in proc.stderr:
        record = json.loads(line)
        if record["event"] == "listening" and key in record:
            return record[key]
    raise AssertionError(f"the gateway ended without a {key} listening line")


def _plain_get(address: str, target: str) -> tuple[int, str]:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


async def test_metrics_listener_serves_prometheus_without_a_certificate(ca_home, tmp_path):
    proc = _serve(ca_home, "--http", "off", "--metrics", "127.0.0.1:0",
                  "--data", str(tmp_path / "data"))
    try:
        address = await trio.to_thread.run_sync(_listening, proc, "metrics")
        status, body = await trio.to_thread.run_sync(_plain_get, address, "/metrics")
        assert status == 200
        names = {s.name for f in text_string_to_metric_families(body) for s in f.samples}
        assert {"fleetgate_store_commits_total", "fleetgate_connections",
                "process_resident_memory_bytes"} <= names
        status, _ = await trio.to_thread.run_sync(_plain_get, address, "/api/v1/networks")
        assert status == 404  # nothing but the metrics on this listener
        proc.send_signal(signal.SIGTERM)
        assert await trio.to_thread.run_sync(lambda: proc.wait(30)) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
