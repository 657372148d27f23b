"""The packaging files: the licence matches pyproject, the systemd units pass systemd's own
checker, and the container files keep the CA key away from the gateway."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[3]
UNITS = ROOT / "packaging" / "systemd"


def test_license_file_matches_pyproject():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert declared == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def _verify(unit_dir: Path, *names: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", *(str(unit_dir / n) for n in names)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze (Debian package systemd) is not installed")
def test_systemd_units_pass_systemd_analyze_verify(tmp_path):
    # The units name /usr/bin/fleet-*; point them at this venv's scripts so that verify,
    # which checks the executables exist, checks ours.
    bindir = Path(sys.executable).parent
    for unit in UNITS.glob("*.service"):
        text = unit.read_text()
        for script in ("fleet-gateway", "fleet-ca"):
            text = text.replace(f"/usr/bin/{script}", str(bindir / script))
        (tmp_path / unit.name).write_text(text)
    for timer in UNITS.glob("*.timer"):
        shutil.copy(timer, tmp_path / timer.name)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert {"fleet-gateway.service", "fleet-ca-crl.service", "fleet-ca-crl.timer"} <= set(names)
    result = _verify(tmp_path, *names)
    assert result.returncode == 0, result.stderr
    assert "fleet-" not in result.stderr, result.stderr  # no warning about our units


def test_systemd_analyze_rejects_a_broken_unit(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze (Debian package systemd) is not installed")
    (tmp_path / "broken.service").write_text("[Service]\nExecStart=relative/path\n")
    assert _verify(tmp_path, "broken.service").returncode != 0


def test_gateway_unit_is_hardened():
    unit = (UNITS / "fleet-gateway.service").read_text()
    settings = {line.split("=", 1)[0]: line.split("=", 1)[1]
                for line in unit.splitlines() if "=" in line and not line.startswith("#")}
    assert settings["NoNewPrivileges"] == "yes"
    assert settings["ProtectSystem"] == "strict"
    assert settings["CapabilityBoundingSet"] == ""
    assert settings["User"] == "fleetgate"
    # `systemctl reload` = SIGHUP, which the gateway handles: reopen logs, reload TLS files
    # and the CRL (gateway.revocation.watch_tls_files; tests/integration/gateway/test_cli.py).
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"


def _final_stage(dockerfile: str) -> list[str]:
    stages = dockerfile.split("\nFROM ")
    return [line.strip() for line in stages[-1].splitlines()]


def test_image_runs_unprivileged_with_a_healthcheck():
    final = _final_stage((ROOT / "Dockerfile").read_text())
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK") for line in final)
    assert "/healthz" in (ROOT / "Dockerfile").read_text()


def test_compose_keeps_the_ca_volume_away_from_the_gateway():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    for name, service in services.items():
        volumes = [v.split(":")[0] for v in service.get("volumes", [])]
        if name not in ("pki", "signer"):  # the CA itself, and its online signer
            assert "ca" not in volumes, f"{name} mounts the CA's key volume"
    assert services["gateway"]["read_only"] is True
    assert services["signer"]["entrypoint"] == ["fleet-ca"]
    assert services["signer"]["command"][0] == "serve"


def _container_engine() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run([docker, "info"], capture_output=True, timeout=30)
    return docker if probe.returncode == 0 else None


@pytest.mark.slow
def test_image_builds_where_a_container_engine_runs():
    docker = _container_engine()
    if docker is None:
        pytest.skip("no container engine: `docker info` fails or docker is not installed")
    result = subprocess.run([docker, "build", "-q", str(ROOT)], capture_output=True,
                            text=True, timeout=1800)
    assert result.returncode == 0, result.stderr
