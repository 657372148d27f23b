"""The README's quick tour, run as written (only its two port numbers swapped for free
ones, so the test never collides with a gateway already on 8883/8443)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tour() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Quick tour"):]
    found = re.search(r"```sh\n(.*?)```", section, re.S)
    assert found, "the quick tour has no ```sh block"
    return found.group(1)


def _free_ports(count: int) -> list[int]:
    """`count` distinct free ports: each socket stays bound until all are chosen (one
    released before the next bind may be handed out again)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("openssl") is None,
                    reason="needs curl and openssl (Debian packages, in the Makefile's TEST_DEBS)")
def test_the_readme_quick_tour_runs_as_written(tmp_path: Path) -> None:
    script = _tour()
    assert "8883" in script and "8443" in script
    mqtt, https = _free_ports(2)
    script = script.replace("8883", str(mqtt)).replace("8443", str(https))
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "bin").symlink_to(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k != "FLEET_CA_HOME"}
    # Its own process group: a failed step leaves the background gateway behind, holding
    # the output pipes open; the group is stopped whatever happens.
    tour = subprocess.Popen(["bash", "-e", "-c", script], cwd=tmp_path, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = tour.communicate(timeout=240)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(tour.pid, signal.SIGKILL)
        tour.communicate()
    assert tour.returncode == 0, out[-4000:]
    devices = sorted(p.name for p in (tmp_path / "tour" / "devices").iterdir() if p.is_dir())
    assert len(devices) == 100
    assert ": OK" in out  # openssl verify of the bundles
    from cryptography import x509

    from ca.profiles import network_of

    claimed = str(network_of(x509.load_pem_x509_certificates(
        (tmp_path / "tour" / "claimed" / "device.crt").read_bytes())[0]))
    assert f"provisioned network={claimed}" in out  # by claim, through the gateway
    assert f"renewed network={claimed}" in out  # over MQTT
    assert "9/10" in out  # fleet-ca claims: one use spent
    assert "alert certificate required" in out  # s_client without a certificate
    revoked = out[out.rindex("NOT AFTER"):out.index("attempts,")]  # fleet-ca list --status revoked
    assert claimed in revoked  # superseded at the new certificate's first use
    assert "audit trail intact" in out
    assert "22 attempts, 0 got through, 0 not tried" in out
    assert f'"uuid": "{devices[0]}"' in out  # the tree of the first device's network
    assert f"network {devices[0]}" in out  # fleet-ca revoke named it
    log = [json.loads(line) for line in
           (tmp_path / "tour" / "gateway.log").read_text().splitlines()]
    assert log[-1]["event"] == "stopped"  # `kill %2 %1` stopped it cleanly
