"""Start each system under test on loopback with mTLS, and read its CPU time and memory.

Every server runs as a child process pinned to the server cores, logging to a file (a pipe
nobody reads would stall a chatty server). `Server.cpu_seconds()` sums utime+stime from
/proc/<pid>/stat over the process and its descendants; `Server.rss_kib()` sums VmRSS.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.pki import Pki

CLK_TCK = os.sysconf("SC_CLK_TCK")
BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
AMQTT_VERSION = "0.12.1"


class Unavailable(RuntimeError):
    """The system cannot be measured on this machine; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Server:
    """A running system under test: where to connect and which processes to account."""

    name: str
    port: int
    procs: list[subprocess.Popen]
    log: Path
    notes: list[str] = field(default_factory=list)

    def pids(self) -> list[int]:
        out: list[int] = []
        for p in self.procs:
            out.extend(_descendants(p.pid))
        return out

    def cpu_seconds(self) -> float:
        return sum(proc_cpu_seconds(p) for p in self.pids())

    def rss_kib(self) -> int:
        return sum(proc_rss_kib(p) for p in self.pids())

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def _pin(cpus: tuple[int, ...]):
    def pre() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
    return pre


def spawn(cmd: list[str], log: Path, cpus: tuple[int, ...], env: dict | None = None,
           cwd: Path | None = None) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=_pin(cpus), env=env, cwd=cwd)


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise Unavailable(f"exited {proc.returncode} at start: {tail[0][:200]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise Unavailable(f"did not listen on port {port} within {timeout:.0f} s")


# ---------------------------------------------------------------------------------------------
# mosquitto


def mosquitto_config(pki: Pki, port: int, *, max_queued: int | None = None,
                     crl: Path | None = None) -> str:
    """mosquitto.conf for one mTLS listener on loopback; defaults unless asked otherwise."""
    lines = [
        "per_listener_settings false",
        # Started as root, mosquitto would switch to its own user, which cannot read the
        # bench's private temporary folder; staying the invoking user keeps the keys 0600.
        f"user {pwd.getpwuid(os.geteuid()).pw_name}",
        "persistence false",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "connection_messages false",
        f"listener {port} 127.0.0.1",
        f"cafile {pki.root}",
        f"certfile {pki.server_cert}",
        f"keyfile {pki.server_key}",
        "require_certificate true",
        "use_identity_as_username true",
        "allow_anonymous true",
    ]
    if crl is not None:
        lines.append(f"crlfile {crl}")
    if max_queued is not None:
        lines.append(f"max_queued_messages {max_queued}")
    return "\n".join(lines) + "\n"


@contextmanager
def mosquitto(pki: Pki, work: Path, cpus: tuple[int, ...], *, max_queued: int | None = None,
              crl: Path | None = None) -> Iterator[Server]:
    exe = "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        raise Unavailable("mosquitto is not installed (Debian package mosquitto)")
    port = free_port()
    conf = work / f"mosquitto-{port}.conf"
    conf.write_text(mosquitto_config(pki, port, max_queued=max_queued, crl=crl))
    log = work / f"mosquitto-{port}.log"
    proc = spawn([exe, "-c", str(conf)], log, cpus)
    server = Server("mosquitto", port, [proc], log)
    try:
        _wait_port(port, proc, log)
        yield server
    finally:
        server.stop()


def mosquitto_version() -> str:
    try:
        out = subprocess.run(["/usr/sbin/mosquitto", "-h"], capture_output=True, text=True).stdout
    except OSError:
        return "not installed"
    m = re.search(r"version (\S+)", out)
    return m.group(1) if m else "unknown"


# ---------------------------------------------------------------------------------------------
# amqtt, in its own venv so its pinned dependencies never touch the project's


def amqtt_python(repo: Path = REPO) -> Path:
    """The bench venv's interpreter, creating the venv with amqtt when missing.

    Raises Unavailable when it cannot be created (no network to PyPI, for instance).
    """
    venv = repo / ".venv-bench"
    py = venv / "bin" / "python"
    ok = py.exists() and subprocess.run(
        [str(py), "-c", "import amqtt.broker"], capture_output=True).returncode == 0
    if ok:
        return py
    base = getattr(sys, "_base_executable", sys.executable)
    steps = [[base, "-m", "venv", str(venv)],
             [str(py), "-m", "pip", "install", "-q", f"amqtt=={AMQTT_VERSION}"]]
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            raise Unavailable(f"could not install amqtt in {venv}: {last[0][:200]}")
    return py


@contextmanager
def amqtt(pki: Pki, work: Path, cpus: tuple[int, ...]) -> Iterator[Server]:
    py = amqtt_python()
    port = free_port()
    log = work / f"amqtt-{port}.log"
    config = {
        "listeners": {"default": {
            "type": "tcp", "bind": f"127.0.0.1:{port}", "ssl": True,
            "cafile": str(pki.root), "certfile": str(pki.server_cert),
            "keyfile": str(pki.server_key),
        }},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    proc = spawn([str(py), str(BENCH_DIR / "amqtt_runner.py"), json.dumps(config)], log, cpus)
    server = Server("amqtt", port, [proc], log,
                    notes=["client certificates required (CERT_REQUIRED set by the runner)"])
    try:
        _wait_port(port, proc, log, timeout=60)
        yield server
    finally:
        server.stop()


def amqtt_version() -> str:
    py = REPO / ".venv-bench" / "bin" / "python"
    if not py.exists():
        return "not installed"
    code = "import importlib.metadata as m; print(m.version('amqtt'))"
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


# ---------------------------------------------------------------------------------------------
# fleetgate, started through its CLI exactly as an operator would


# fleetgate's per-connection and per-network limits protect a production gateway; mosquitto and
# amqtt have none by default, so the bench lifts them to measure the gateway, not its throttle.
FLEETGATE_BENCH_CONFIG = """\
[limits]
max_connections = 50000
max_connections_per_network = 50000
connection_rate = 1000000.0
connection_burst = 1000000
connection_rate_per_source = 1000000.0
connection_burst_per_source = 1000000
max_pending = 50000
max_pending_per_source = 50000
publish_rate = 100000000.0
publish_burst = 100000000
byte_rate = 100000000000
byte_burst = 100000000000
"""
LISTENING = re.compile(r'"mqtt"\s*:\s*"127\.0\.0\.1:(\d+)"')


@contextmanager
def fleetgate(pki: Pki, work: Path, cpus: tuple[int, ...], *, data: Path | None = None,
              needs: str = "the gateway") -> Iterator[Server]:
    """`fleet-gateway serve`, port read from its `{"event":"listening",...}` log line."""
    exe = Path(sys.executable).parent / "fleet-gateway"
    if not exe.exists():
        raise Unavailable(f"not yet available (needs {needs}): fleet-gateway is not installed")
    if pki.tool != "fleet-ca":
        raise Unavailable("not yet available: the gateway reads a fleet-ca home")
    data = data or work / "fleetgate-data"
    data.mkdir(parents=True, exist_ok=True)
    log = work / f"fleetgate-{time.monotonic_ns()}.log"
    config = work / "fleetgate-bench.toml"
    config.write_text(FLEETGATE_BENCH_CONFIG)
    cmd = [str(exe), "serve", "--config", str(config), "--ca-home", str(pki.home),
           "--mqtt", "127.0.0.1:0", "--http", "off", "--data", str(data)]
    proc = spawn(cmd, log, cpus)
    server = Server("fleetgate", 0, [proc], log,
                    notes=["per-connection rate and connection limits lifted "
                           "(bench/servers.py FLEETGATE_BENCH_CONFIG): the peers have none"])
    try:
        deadline = time.monotonic() + 20
        while True:
            text = log.read_text(errors="replace")
            for line in text.splitlines():
                if '"listening"' in line and (m := LISTENING.search(line)):
                    server.port = int(m.group(1))
            if server.port:
                break
            if proc.poll() is not None:
                tail = text.strip().splitlines()[-1:] or ["(no output)"]
                raise Unavailable(f"not yet available (needs {needs}): fleet-gateway serve "
                                  f"exited {proc.returncode}: {tail[0][:160]}")
            if time.monotonic() > deadline:
                raise Unavailable(f"not yet available (needs {needs}): no listening line "
                                  "in 20 s")
            time.sleep(0.05)
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------
# the trio floor: a bare trio mTLS server on fleetgate's TLS context (bench/trio_floor.py)


@contextmanager
def trio_floor(pki: Pki, work: Path, cpus: tuple[int, ...]) -> Iterator[Server]:
    if pki.tool != "fleet-ca":
        raise Unavailable("not yet available: the floor reads a fleet-ca home")
    log = work / f"trio-floor-{time.monotonic_ns()}.log"
    proc = spawn([sys.executable, str(BENCH_DIR / "trio_floor.py"), str(pki.home),
                  str(pki.server_cert), str(pki.server_key)], log, cpus,
                 env={**os.environ, "PYTHONPATH": os.pathsep.join(
                     filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    server = Server("trio-floor", 0, [proc], log, notes=[
        "a bare trio mTLS server on fleetgate's TLS context: handshake, CONNECT, CONNACK, "
        "nothing else (bench/trio_floor.py)"])
    try:
        deadline = time.monotonic() + 20
        while not server.port:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith('{"listening"'):
                    server.port = json.loads(line)["listening"]
            if proc.poll() is not None:
                raise Unavailable(f"trio floor exited {proc.returncode}: "
                                  + log.read_text(errors="replace")[-200:])
            if time.monotonic() > deadline:
                raise Unavailable("trio floor: no listening line in 20 s")
            time.sleep(0.05)
        yield server
    finally:
        server.stop()
