"""`scripts/demo --cluster --quick` end to end, in a clone-like copy of the tree: two nodes on
a throwaway PostgreSQL, one killed with SIGKILL mid-run, every device back on the other and
every acknowledged reading stored."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.storage.postgres.local_server import find_bin_dir

ROOT = Path(__file__).resolve().parents[2]
IGNORE = shutil.ignore_patterns(".venv*", ".git", "certs", "var", "__pycache__",
                                ".pytest_cache", ".hypothesis", "*.egg-info", ".ruff_cache")


@pytest.mark.slow
@pytest.mark.skipif(find_bin_dir() is None,
                    reason="needs PostgreSQL (Debian package postgresql, in TEST_DEBS)")
def test_cluster_demo_fails_over_without_losing_an_acknowledged_reading(tmp_path: Path) -> None:
    tree = tmp_path / "fleetgate"
    shutil.copytree(ROOT, tree, ignore=IGNORE)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "FLEET_CA_HOME": str(tmp_path / "ca-home")}
    done = subprocess.run([str(tree / "scripts" / "demo"), "--cluster", "--quick"], env=env,
                          cwd=tree, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    spread = re.search(r"demo-a serves (\d+) devices, demo-b (\d+)", out)
    assert spread and int(spread[1]) > 0 and int(spread[2]) > 0, out[-4000:]
    assert re.search(rf"every device of demo-a back on demo-b in [\d.]+ s, each reporting "
                     rf"again \(new rows from all {spread[1]}\)", out)
    assert '"event": "node_dead", "node": "demo-a", "reaper": "demo-b"' in out
    assert re.search(r"demo-a +(dead|reaped) ", out)  # cluster status
    acked = re.search(r"devices: ([\d,]+) readings acknowledged; PostgreSQL: ([\d,]+) rows", out)
    assert acked and int(acked[1].replace(",", "")) > 0
    assert int(acked[2].replace(",", "")) >= int(acked[1].replace(",", ""))
    assert "nothing lost: every acknowledged reading is stored (per device)" in out
    assert "demo --cluster: every step worked" in out
    # Nothing left running: demo-b's last line is its clean stop.
    last = (tree / "var" / "cluster" / "log" / "demo-b.jsonl").read_text().splitlines()[-1]
    assert '"event": "stopped"' in last
