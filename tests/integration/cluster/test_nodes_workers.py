"""`fleet-gateway serve --workers 2` and `--node` with real processes on a real PostgreSQL:
both workers serve devices on one port, a killed worker is restarted, SIGTERM stops them
all and leaves no heartbeat row; a duplicate node name and SQLite with workers refused."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from gateway.mqtt.codec import PacketReader, encode
from gateway.mqtt.packets import ConnAck, Connect

WAIT = 60.0  # a deadline for "never happened", not a timing assertion


def _records(path: Path) -> list[dict]:
    """Every JSON line of the log at `path`, oldest first. The gateway rotates its log file
    at the first line of a UTC day: a run across midnight has its earlier lines in
    `<path>.1` (a fresh tmp_path holds no older backup)."""
    out = []
    for part in (path.with_name(path.name + ".1"), path):
        if not part.exists():
            continue
        for line in part.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


async def wait_record(path: Path, event: str, proc: subprocess.Popen | None = None,
                      count: int = 1, **fields) -> list[dict]:
    """Wait for `count` records of `event` with `fields` in the JSON log at `path`. The log
    is another process's file: there is nothing to be woken by, so it is re-read."""
    with trio.fail_after(WAIT):
        while True:
            found = [r for r in _records(path) if r["event"] == event
                     and all(r.get(k) == v for k, v in fields.items())]
            if len(found) >= count:
                return found
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the gateway exited {proc.returncode} waiting for "
                                     f"{event}: {path.read_text()[-2000:]}")
            await trio.sleep(0.05)


def serve(ca_home: Path, log: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--ca-home", str(ca_home),
         "--mqtt", "127.0.0.1:0", "--http", "off", "--log-file", str(log), *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()


async def connect_device(port: int, bundle, client_id: str) -> trio.SSLStream:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(bundle.ca_path))
    ctx.load_cert_chain(str(bundle.cert_path), str(bundle.key_path))
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, ctx, server_hostname="127.0.0.1")
    await stream.do_handshake()
    await stream.send_all(encode(Connect(client_id, keepalive=60)))
    reader = PacketReader(max_packet_size=1024)
    with trio.fail_after(WAIT):
        while (packet := reader.next_packet()) is None:
            reader.feed(await stream.receive_some(4096))
    assert packet == ConnAck(), packet
    return stream


def status(url: str) -> tuple[int, dict]:
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "cluster", "status",
                           "--store", url, "--json"], capture_output=True, text=True,
                          timeout=60)
    return done.returncode, json.loads(done.stdout) if done.stdout else {}


@pytest.mark.slow
async def test_two_workers_share_one_port_and_both_serve_devices(
        ca_home, make_device, postgres_url, tmp_path):
    log = tmp_path / "gateway.jsonl"
    parent = serve(ca_home.path, log, "--store", postgres_url, "--workers", "2",
                   "--node", "w")
    streams = []
    try:
        supervising = (await wait_record(log, "supervising", parent))[0]
        port = int(supervising["mqtt"].rpartition(":")[2])
        logs = {name: tmp_path / f"gateway-{i}.jsonl" for i, name in ((1, "w-1"), (2, "w-2"))}
        for name, worker_log in logs.items():
            listening = await wait_record(worker_log, "listening", parent)
            assert listening[0]["mqtt"] == f"127.0.0.1:{port}", name
            await wait_record(worker_log, "node_joined", parent, node=name)
        # Twenty devices on the one port: the kernel spreads them over both workers.
        for i in range(20):
            streams.append(await connect_device(port, make_device(), f"dev-{i}"))
        def per_worker() -> dict[str, int]:
            return {name: len([r for r in _records(path) if r["event"] == "connected"])
                    for name, path in logs.items()}

        with trio.fail_after(WAIT):  # each worker logs `connected` once it answered
            while sum(per_worker().values()) < 20:
                await trio.sleep(0.05)
        counts = per_worker()
        assert sum(counts.values()) == 20
        assert all(n > 0 for n in counts.values()), counts
        code, doc = status(postgres_url)
        assert code == 0 and sorted(n["name"] for n in doc["nodes"]) == ["w-1", "w-2"], doc
        assert all(n["state"] == "alive" for n in doc["nodes"])

        # A worker killed outright is restarted (and takes its name back at once).
        pid = next(r["pid"] for r in _records(log)
                   if r["event"] == "worker_started" and r["node"] == "w-1")
        os.kill(pid, signal.SIGKILL)
        exited = (await wait_record(log, "worker_exited", parent, node="w-1"))[0]
        assert exited["code"] == -signal.SIGKILL
        restarted = (await wait_record(log, "worker_started", parent, count=2, node="w-1"))[1]
        assert restarted["pid"] != pid
        await wait_record(logs["w-1"], "node_reaping", parent, node="w-1", dead="w-1")
        await wait_record(logs["w-1"], "listening", parent, count=2)
    finally:
        for stream in streams:
            with trio.move_on_after(1):
                await trio.aclose_forcefully(stream)
        code = stop(parent)
    assert code == 0, parent.stderr.read()
    stopped = [r for r in _records(log) if r["event"] == "worker_stopped"]
    assert sorted(r["node"] for r in stopped) == ["w-1", "w-2"]
    assert all(r["code"] == 0 for r in stopped), stopped
    # Clean stops: no heartbeat row left.
    code, doc = status(postgres_url)
    assert (code, doc["nodes"]) == (0, [])


async def test_a_second_node_with_a_live_nodes_name_is_refused(ca_home, postgres_url, tmp_path):
    first = serve(ca_home.path, tmp_path / "a.jsonl", "--store", postgres_url, "--node", "dup")
    try:
        await wait_record(tmp_path / "a.jsonl", "listening", first)
        second = serve(ca_home.path, tmp_path / "b.jsonl", "--store", postgres_url,
                       "--node", "dup")
        code = second.wait(60)
        err = second.stderr.read()
        assert code == 10
        assert err.count("\n") == 1 and "node name 'dup' is in use" in err, err
        assert not [r for r in _records(tmp_path / "b.jsonl") if r["event"] == "listening"]
    finally:
        assert stop(first) == 0


def test_workers_with_sqlite_are_refused_in_one_line(ca_home, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--ca-home", str(ca_home.path),
         "--data", str(tmp_path / "data"), "--workers", "2", "--mqtt", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1
    assert "--workers 2 needs a PostgreSQL store" in done.stderr


def test_a_bad_node_name_is_one_line_and_exit_3(ca_home):
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--ca-home", str(ca_home.path),
         "--node", "no spaces/please"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and "option 'node' must be" in done.stderr


async def test_the_reuse_port_listeners_share_a_port():
    """Two listeners bound with SO_REUSEPORT on the same port in one process: the flag the
    workers bind with."""
    from gateway.listeners import open_tcp_listeners

    first = await open_tcp_listeners(0, host="127.0.0.1", reuse_port=True)
    port = first[0].socket.getsockname()[1]
    second = await open_tcp_listeners(port, host="127.0.0.1", reuse_port=True)
    assert second[0].socket.getsockname()[1] == port
    with pytest.raises(OSError):
        await open_tcp_listeners(port, host="127.0.0.1")  # without the flag: in use
    for listener in first + second:
        await listener.aclose()
