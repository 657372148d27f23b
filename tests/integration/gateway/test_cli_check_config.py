"""`fleet-gateway check-config`: what an operator runs before `serve`."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from gateway.config import GatewayConfig, load_config

EXE = shutil.which("fleet-gateway", path=str(Path(sys.executable).parent)) or "fleet-gateway"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=60)


def test_check_config_prints_a_config_that_loads_back_identically(pki, tmp_path):
    config = tmp_path / "gw.toml"
    config.write_text("[limits]\nmax_inflight = 7\n[log]\ntruncate_ip = false\n")
    result = _run("check-config", "--config", str(config), "--ca-home", str(pki.path),
                  "--mqtt", "127.0.0.1:0", "--data", str(tmp_path / "data"))
    assert result.returncode == 0, result.stderr
    printed = tmp_path / "effective.toml"
    printed.write_text(result.stdout)
    effective = load_config(printed)
    assert effective.max_inflight == 7 and effective.truncate_ip is False
    assert effective.ca_home == pki.path and effective.mqtt == "127.0.0.1:0"
    assert effective.max_queued == GatewayConfig().max_queued  # defaults printed too
    assert set(tomllib.loads(result.stdout)) | {"cert", "key"} >= {
        "ca_home", "mqtt", "http", "data", "max_packet_size"}
    assert not (tmp_path / "data").exists()  # checking opens no store


def test_check_config_refuses_unusable_tls_files_with_one_line(pki, tmp_path):
    garbage = tmp_path / "server.crt"
    garbage.write_text("not a certificate")
    result = _run("check-config", "--ca-home", str(pki.path), "--cert", str(garbage))
    assert result.returncode == 3
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleet-gateway: error: "), result.stderr
    assert "server certificate" in lines[0]
    assert "not a PEM file" in lines[0] and "_ssl.c" not in lines[0]  # says what to check


def test_http_without_data_is_an_error_not_a_silent_no_api(pki):
    for verb in ("serve", "check-config"):
        result = _run(verb, "--ca-home", str(pki.path), "--http", "127.0.0.1:0")
        assert result.returncode == 3, result.stderr
        assert "--http needs --data" in result.stderr
        assert "Traceback" not in result.stderr
