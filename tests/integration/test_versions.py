"""Every command says which release it is: `--version` names the installed distribution."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest


@pytest.mark.parametrize("command", ["fleet-ca", "fleet-gateway", "firmware-sim"])
def test_version_names_the_installed_release(command):
    exe = shutil.which(command, path=str(Path(sys.executable).parent)) or command
    result = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{command} {version('fleetgate')}"
