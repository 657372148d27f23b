"""The real `fleet-gateway` process: start-up line, SIGHUP, SIGTERM, and its errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import trio
from gwhelpers import WAIT, MQTTTestClient, Running

from gateway.mqtt.packets import ConnAck, ConnectReturnCode

EXE = shutil.which("fleet-gateway", path=str(Path(sys.executable).parent)) or "fleet-gateway"


class GatewayProcess:
    """A `fleet-gateway serve` child whose JSON stderr lines are read by a thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [EXE, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[dict] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(json.loads(line))
                self._cond.notify_all()
        with self._cond:
            self.lines.append({"event": "<eof>"})
            self._cond.notify_all()

    def wait_line(self, event: str, **fields) -> dict:
        def found():
            return next((r for r in self.lines if r["event"] == event and
                         all(r.get(k) == v for k, v in fields.items())), None)

        with self._cond:
            assert self._cond.wait_for(lambda: found() or self.lines[-1:] == [{"event": "<eof>"}],
                                       timeout=WAIT)
            record = found()
        assert record is not None, self.lines
        return record

    async def await_line(self, event: str, **fields) -> dict:
        return await trio.to_thread.run_sync(lambda: self.wait_line(event, **fields))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def gateway_process(pki):
    started: list[GatewayProcess] = []

    def start(*args: str) -> GatewayProcess:
        http = "127.0.0.1:0" if "--data" in args else "off"  # the API needs the store
        process = GatewayProcess("--ca-home", str(pki.path), "--mqtt", "127.0.0.1:0",
                                 "--http", http, *args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def _running(record: dict) -> Running:
    host, port = record["mqtt"].rsplit(":", 1)
    return Running(None, host, int(port), None)  # type: ignore[arg-type]


async def test_sigterm_closes_sessions_with_server_shutdown_and_exits_0(gateway_process, net_a):
    process = gateway_process()
    running = _running(await process.await_line("listening"))
    client = await MQTTTestClient.open(running, net_a)
    assert await client.connect("until-stop") == ConnAck(ConnectReturnCode.ACCEPTED, False)
    process.proc.send_signal(signal.SIGTERM)
    assert await client.receive() is None
    record = await process.await_line("disconnected", client_id="until-stop")
    assert record["reason"] == "SERVER_SHUTDOWN"
    assert await trio.to_thread.run_sync(lambda: process.proc.wait(WAIT)) == 0
    await process.await_line("stopped")


async def test_sighup_reloads_the_crl_and_closes_revoked_sessions(
    gateway_process, pki, tmp_path
):
    config = tmp_path / "gateway.toml"
    config.write_text("[tls]\ncrl_poll_interval = 3600.0\n")  # only SIGHUP reloads here
    process = gateway_process("--config", str(config))
    running = _running(await process.await_line("listening"))
    creds = pki.device()
    client = await MQTTTestClient.open(running, creds)
    assert await client.connect("hup") == ConnAck(ConnectReturnCode.ACCEPTED, False)
    pki.home.revoke(creds.serial)
    process.proc.send_signal(signal.SIGHUP)
    assert await client.receive() is None
    record = await process.await_line("disconnected", client_id="hup")
    assert record["reason"] == "REVOKED"


def _run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=WAIT, **kw)


def _one_line_error(result: subprocess.CompletedProcess, code: int, text: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleet-gateway: error: "), result.stderr
    assert text in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_ca_home_is_one_line_and_exit_3(tmp_path):
    _one_line_error(_run("serve", "--ca-home", str(tmp_path / "nope")), 3, "CA home not found")


def test_missing_server_certificate_is_one_line_and_exit_3(pki, tmp_path):
    result = _run("serve", "--ca-home", str(pki.path), "--cert", str(tmp_path / "x.crt"))
    _one_line_error(result, 3, "server certificate not found")


def test_bad_config_file_is_one_line_and_exit_3(pki, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\nmax_inflight = 'many'\n")
    _one_line_error(_run("serve", "--ca-home", str(pki.path), "--config", str(bad)), 3,
                    "max_inflight")
    bad.write_text("this is not toml [")
    _one_line_error(_run("serve", "--ca-home", str(pki.path), "--config", str(bad)), 3,
                    "not valid TOML")
    bad.write_text("[limits]\nmax_inflite = 3\n")
    _one_line_error(_run("serve", "--ca-home", str(pki.path), "--config", str(bad)), 3,
                    "unknown option 'max_inflite'")
    _one_line_error(_run("serve", "--ca-home", str(pki.path), "--config",
                         str(tmp_path / "missing.toml")), 3, "cannot read config")


def test_bad_listener_address_is_one_line_and_exit_3(pki):
    _one_line_error(_run("serve", "--ca-home", str(pki.path), "--mqtt", "localhost"), 3,
                    "bad listener address")


def test_address_in_use_is_one_line_and_exit_4(pki):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run("serve", "--ca-home", str(pki.path), "--mqtt", f"127.0.0.1:{port}")
    assert result.returncode == 4, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("fleet-gateway: error: cannot listen")
    assert "Traceback" not in result.stderr


def test_usage_errors_exit_2():
    assert _run().returncode == 2
    assert _run("serve", "--no-such-flag").returncode == 2
    assert _run("--help").returncode == 0


def test_example_config_is_valid_and_lists_every_option():
    from dataclasses import fields

    from gateway.config import GatewayConfig, load_config

    example = Path(__file__).parents[3] / "certs.example" / "gateway.example.toml"
    config = load_config(example)
    assert config == GatewayConfig(**{
        f.name: getattr(config, f.name) for f in fields(GatewayConfig)
    })
    text = example.read_text()
    for f in fields(GatewayConfig):
        assert f"{f.name} =" in text, f"{f.name} missing from {example}"
    # The example states the defaults.
    defaults = GatewayConfig()
    for f in fields(GatewayConfig):
        if f.name not in ("ca_home", "cert", "key", "data", "erasure_ledger"):
            assert getattr(config, f.name) == getattr(defaults, f.name), f.name




MODEL = (b'{"devices": [{"name": "thermostat", "values": [{"name": "temperature", '
         b'"permission": "r", "number": {"min": -40, "max": 125}}]}]}')


async def test_with_data_reports_are_acknowledged_once_stored_and_survive_the_process(
    gateway_process, net_a, tmp_path
):
    from gateway.mqtt.packets import PubAck, Publish, QoS, SubAck, Subscribe
    from gateway.storage.sqlite.store import open_sqlite_store

    data = tmp_path / "data"
    process = gateway_process("--data", str(data))
    await process.await_line("store_opened")
    running = _running(await process.await_line("listening"))
    client = await MQTTTestClient.open(running, net_a)
    assert await client.connect("thermo") == ConnAck(ConnectReturnCode.ACCEPTED, False)
    await client.send(Subscribe(1, (("model/+", QoS.AT_LEAST_ONCE),)))
    assert await client.receive() == SubAck(1, (1,))
    await client.send(Publish("model", MODEL, QoS.AT_LEAST_ONCE, packet_id=1))
    packets = [await client.receive(), await client.receive()]
    assert PubAck(1) in packets
    (accepted,) = [p for p in packets if isinstance(p, Publish)]
    assert accepted.topic == "model/accepted"
    assert json.loads(accepted.payload)["network"]["uuid"] == net_a.network
    await client.send(PubAck(accepted.packet_id))
    await client.send(Publish("report/thermostat/temperature", b"21.5", QoS.AT_LEAST_ONCE,
                              packet_id=2))
    assert await client.receive() == PubAck(2)
    process.proc.send_signal(signal.SIGTERM)
    assert await trio.to_thread.run_sync(lambda: process.proc.wait(WAIT)) == 0
    async with open_sqlite_store(data) as store:
        latest = await store.latest_states(uuid.UUID(net_a.network))
        status = await store.connection_status(uuid.UUID(net_a.network))
    assert [str(state.data) for state in latest.values()] == ["21.5"]
    assert status is not None and "SERVER_SHUTDOWN" in repr(status)


def test_unusable_data_folder_is_one_line_and_exit_3(pki, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = _run("serve", "--ca-home", str(pki.path), "--mqtt", "127.0.0.1:0",
                  "--data", str(blocker / "data"))
    _one_line_error(result, 3, "cannot open the store")


def test_ca_home_comes_from_fleet_ca_home_when_not_given(tmp_path):
    env = {**os.environ, "FLEET_CA_HOME": str(tmp_path / "from-env")}
    result = _run("serve", env=env)
    _one_line_error(result, 3, f"CA home not found: {tmp_path / 'from-env'}")


async def test_log_level_info_leaves_routine_lines_out_and_debug_writes_them(
        gateway_process, net_a):
    from gateway.mqtt.packets import QoS, SubAck, Subscribe

    for level, written in ((None, False), ("debug", True)):
        process = gateway_process(*(("--log-level", level) if level else ()))
        running = _running(await process.await_line("listening"))
        client = await MQTTTestClient.open(running, net_a)
        assert await client.connect("levels") == ConnAck(ConnectReturnCode.ACCEPTED, False)
        await client.send(Subscribe(1, (("a/#", QoS.AT_MOST_ONCE),)))
        assert await client.receive() == SubAck(1, (0,))
        await client.aclose()
        # Lines come in order: once `disconnected` is out, `subscribed` was or never will be.
        await process.await_line("disconnected", client_id="levels")
        events = [r["event"] for r in process.lines]
        assert ("subscribed" in events) is written, events
        assert {r["level"] for r in process.lines if r["event"] == "connected"} == {"info"}
        process.stop()


def test_a_wrong_log_level_is_one_line_and_exit_3(pki, tmp_path):
    for verb in ("serve", "check-config"):
        result = _run(verb, "--ca-home", str(pki.path), "--mqtt", "127.0.0.1:0",
                      "--log-level", "loud")
        _one_line_error(result, 3, "'log_level' must be one of debug, info, warning, error")
    config = tmp_path / "gw.toml"
    config.write_text('[log]\nlog_level = "verbose"\n')
    result = _run("serve", "--ca-home", str(pki.path), "--config", str(config))
    _one_line_error(result, 3, "not 'verbose'")


def test_check_config_shows_the_log_level_and_retention(pki):
    result = _run("check-config", "--ca-home", str(pki.path), "--log-level", "warning")
    assert result.returncode == 0, result.stderr
    assert 'log_level = "warning"' in result.stdout.splitlines()
    assert "log_retention_days = 30" in result.stdout.splitlines()


def test_every_verbs_help_shows_examples():
    serve = _run("serve", "--help")
    assert serve.returncode == 0
    assert "--log-level LEVEL" in serve.stdout and "examples:" in serve.stdout
    assert "fleet-gateway serve --config /etc/fleetgate/gateway.toml" in serve.stdout
    assert "kill -HUP" in serve.stdout  # SIGHUP's meaning where an operator looks
    for verb in ("check-config", "backup", "account"):
        result = _run(verb, "--help")
        assert result.returncode == 0, result.stderr
        assert "example" in result.stdout and f"fleet-gateway {verb} " in result.stdout, verb
