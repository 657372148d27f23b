"""A store killed with SIGKILL mid-stream loses nothing it reported as committed."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import trio

from gateway.storage import open_sqlite_store

CHILD = Path(__file__).with_name("store_crash_child.py")


async def run_and_kill(data_dir: Path, network: uuid.UUID, prefix: str, after: int) -> list[str]:
    """Start the child, SIGKILL it once `after` ids were printed; return every printed id."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, str(CHILD), str(data_dir), str(network), prefix],
        stdout=subprocess.PIPE)
    buf = b""
    try:
        with trio.fail_after(60):
            while buf.count(b"\n") < after + 1:  # +1: the "ready" line
                chunk = await proc.stdout.receive_some()
                assert chunk, "the child exited early"
                buf += chunk
            proc.send_signal(signal.SIGKILL)
            # lines already written before the kill were committed too: read them all
            while chunk := await proc.stdout.receive_some():
                buf += chunk
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    lines = buf.decode().splitlines()
    assert lines[0] == "ready"
    complete = buf.endswith(b"\n")
    return lines[1:] if complete else lines[1:-1]  # a torn last line names no whole id


@pytest.mark.slow
async def test_every_id_printed_after_commit_survives_sigkill(tmp_path):
    network = uuid.uuid4()
    printed: list[str] = []
    for attempt, after in enumerate((300, 1500, 700, 3000)):
        printed += await run_and_kill(tmp_path, network, f"run{attempt}", after)
        async with open_sqlite_store(tmp_path) as store:
            tree = await store.get_tree(network)
            value = tree.devices[0].values[0].uuid
            stored = {r.data for r in await store.history(value, limit=10**7)}
        missing = [i for i in printed if i not in stored]
        assert not missing, f"attempt {attempt}: {len(missing)} acknowledged ids lost"
        assert len(printed) >= after
