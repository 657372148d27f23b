"""`scripts/demo --quick` end to end, in a clone-like copy of the tree (no .venv, no certs,
no var), with our venv's bin first on PATH and the CA home in a temporary folder."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
IGNORE = shutil.ignore_patterns(".venv*", ".git", "certs", "var", "__pycache__",
                                ".pytest_cache", ".hypothesis", "*.egg-info", ".ruff_cache")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("curl") is None,
                    reason="needs curl (Debian package curl, in the Makefile's TEST_DEBS)")
def test_demo_runs_every_step_from_a_fresh_tree_and_exits_0(tmp_path: Path) -> None:
    tree = tmp_path / "fleetgate"
    shutil.copytree(ROOT, tree, ignore=IGNORE)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "FLEET_CA_HOME": str(tmp_path / "ca-home")}
    env.pop("DEMO_QUICK", None)
    done = subprocess.run([str(tree / "scripts" / "demo"), "--quick"], env=env, cwd=tree,
                          capture_output=True, text=True, timeout=240)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "the device obeyed" in out
    assert "Report=22.5  Control=22.5" in out  # the tree shows the command carried out
    assert '"event": "provisioned"' in out and '"event": "renewed"' in out  # by claim
    assert '"event": "cert_first_use"' in out and "reason:      superseded" in out
    assert "22 attempts, 0 got through, 0 not tried" in out
    assert '"cause": "CERT_REVOKED"' in out  # the revoked device's reconnect refused
    assert "demo: every step worked" in out
    # It ends with how to reach the console, a demo operator login and an owner code.
    assert "console: https://127.0.0.1:8443/console/" in out
    assert "operator login: demo-operator@example.org / " in out
    assert re.search(r"owner code of network [0-9a-f-]{36}: [0-9a-f]{4}(-[0-9a-f]{4}){7}", out)
    assert "owner-code labels with QR codes" in out
    assert f"logs: {tree / 'var' / 'log'}" in out
    assert (tree / "var" / "log" / "gateway.jsonl").stat().st_size > 0
    assert (tmp_path / "ca-home" / "root.crt").is_file()
    # nothing left running: the gateway's last line is its clean stop
    last = (tree / "var" / "log" / "gateway.jsonl").read_text().splitlines()[-1]
    assert '"event": "stopped"' in last
