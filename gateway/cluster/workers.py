"""`fleet-gateway serve --workers N`: N gateway processes on one machine, one set of ports.

Theory of operation. The parent (the supervisor) serves no device itself:

1. It reserves the ports: one socket per listener (MQTT, and HTTPS when it runs), bound with
   SO_REUSEPORT but never listening, so a port 0 in the configuration resolves once and the
   port stays this gateway's while a worker restarts. A socket that does not listen gets no
   connection; the workers' listening sockets share the port and the kernel spreads new
   connections over them.
2. It starts worker i (1..N) as `fleet-gateway serve` with the same arguments, plus
   `--workers 1 --reuse-port --node <node>-i`, the concrete ports, its own metrics port
   (the configured one + i - 1, when not 0) and its own log file (`gateway-i.jsonl` beside a
   configured `gateway.jsonl`; stderr is shared). Each worker is a node of the cluster with
   its own heartbeat row.
3. A worker that exits is logged (`worker_exited`) and started again after a backoff (1 s,
   doubling to 30 s; back to 1 s after a minute of running), unless its first run failed on
   the configuration or a listener (exit 3 or 4): that will not mend by itself, so the
   supervisor stops every worker and exits with that code.
4. SIGTERM or SIGINT: each worker gets SIGTERM (its clean stop: sessions closed, heartbeat
   row deleted) and `STOP_GRACE` seconds, then SIGKILL; the supervisor exits 0.

A supervisor killed outright (SIGKILL) cannot signal anyone: each worker holds the read end
of a pipe whose write end only the supervisor has (`FLEETGATE_SUPERVISOR_FD`); the pipe's
end of file tells the worker to stop (`watch_supervisor`).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ..config import GatewayConfig

SUPERVISOR_FD_ENV = "FLEETGATE_SUPERVISOR_FD"
STOP_GRACE = 30.0
BACKOFF_FIRST, BACKOFF_MAX, BACKOFF_RESET_AFTER = 1.0, 30.0, 60.0
PERMANENT_EXITS = {3, 4}  # configuration, listener: a restart would fail the same way


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """What worker `index` (1..N) runs as."""

    index: int
    node: str
    argv: tuple[str, ...]
    log_file: str


def _shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reserve_port(host: str, port: int) -> tuple[int, list[socket.socket]]:
    """Bind (never listen) SO_REUSEPORT sockets on every address of `host`: the port the
    workers share. Returns it (port 0: the one the kernel chose) and the sockets to keep.

    Raises:
        OSError: the port is taken by a process that did not set SO_REUSEPORT.
    """
    held: list[socket.socket] = []
    try:
        for family, kind, proto, _, sockaddr in socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
            sock = socket.socket(family, kind, proto)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((sockaddr[0], port, *sockaddr[2:]))
            port = sock.getsockname()[1]  # the next addresses take the same port
    except OSError as exc:
        for sock in held:
            sock.close()
        raise OSError(exc.errno, exc.strerror, _shown(host, port)) from exc
    return port, held


def plan_workers(config: GatewayConfig, argv: Sequence[str], node: str,
                 ports: dict[str, int]) -> list[WorkerPlan]:
    """The N workers' command lines: `argv` (the parent's `serve` arguments) with the
    per-worker flags appended (argparse: the last occurrence of a flag wins)."""
    plans = []
    for i in range(1, config.workers + 1):
        extra = ["--workers", "1", "--reuse-port", "--node", f"{node}-{i}"]
        host, _ = config.mqtt_address
        extra += ["--mqtt", _shown(host, ports["mqtt"])]
        if "http" in ports and config.http_address is not None:
            extra += ["--http", _shown(config.http_address[0], ports["http"])]
        if config.metrics_address is not None:
            mhost, mport = config.metrics_address
            extra += ["--metrics", _shown(mhost, mport + i - 1 if mport else 0)]
        log_file = config.log_file
        if log_file != "-":
            path = Path(log_file)
            log_file = str(path.with_name(f"{path.stem}-{i}{path.suffix}"))
            extra += ["--log-file", log_file]
        plans.append(WorkerPlan(i, f"{node}-{i}", (*argv, *extra), log_file))
    return plans


def _command(plan: WorkerPlan) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", "serve", *plan.argv]


class WorkerFailed(Exception):
    """A worker's first run failed in a way a restart will not mend."""

    def __init__(self, plan: WorkerPlan, code: int) -> None:
        super().__init__(f"worker {plan.node} could not start (exit {code}); its log: "
                         f"{plan.log_file if plan.log_file != '-' else 'stderr'}")
        self.plan = plan
        self.code = code


async def _keep_running(plan: WorkerPlan, log: Any, env: dict[str, str], fd: int) -> None:
    backoff = BACKOFF_FIRST
    first = True
    while True:
        proc = await trio.lowlevel.open_process(_command(plan), env=env, pass_fds=(fd,))
        log.emit("worker_started", node=plan.node, pid=proc.pid)
        started = trio.current_time()
        try:
            code = await proc.wait()
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await _stop(proc)
            log.emit("worker_stopped", node=plan.node, pid=proc.pid, code=proc.returncode)
            raise
        ran = trio.current_time() - started
        if first and code in PERMANENT_EXITS:
            raise WorkerFailed(plan, code)
        first = False
        if ran >= BACKOFF_RESET_AFTER:
            backoff = BACKOFF_FIRST
        log.emit("worker_exited", node=plan.node, pid=proc.pid, code=code,
                 ran=round(ran, 1), restart_in=backoff)
        await trio.sleep(backoff)
        backoff = min(backoff * 2, BACKOFF_MAX)


async def _stop(proc: trio.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    with trio.move_on_after(STOP_GRACE):
        await proc.wait()
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def supervise(config: GatewayConfig, argv: Sequence[str], node: str, log: Any, *,
                    task_status: trio.TaskStatus[list[WorkerPlan]] = trio.TASK_STATUS_IGNORED,
                    ) -> None:
    """Run `config.workers` workers until SIGTERM or SIGINT (see the module's theory).

    Raises:
        OSError: a port cannot be reserved (named in `filename`).
        WorkerFailed: a worker's first run exited 3 or 4.
    """
    held: list[socket.socket] = []
    read_end, write_end = os.pipe()
    try:
        ports: dict[str, int] = {}
        host, port = config.mqtt_address
        ports["mqtt"], sockets = reserve_port(host, port)
        held += sockets
        if config.http_address is not None:
            ports["http"], sockets = reserve_port(*config.http_address)
            held += sockets
        plans = plan_workers(config, argv, node, ports)
        env = {**os.environ, SUPERVISOR_FD_ENV: str(read_end)}
        log.emit("supervising", node=node, workers=config.workers,
                 mqtt=_shown(host, ports["mqtt"]),
                 **({"http": _shown(config.http_address[0], ports["http"])}
                    if "http" in ports else {}))
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                for plan in plans:
                    nursery.start_soon(_keep_running, plan, log, env, read_end)
                task_status.started(plans)
                async for signum in signals:
                    log.emit("stopping", signal=signal.Signals(signum).name)
                    break
                nursery.cancel_scope.cancel()
        log.emit("stopped", node=node, workers=config.workers)
    finally:
        os.close(write_end)
        os.close(read_end)
        for sock in held:
            sock.close()


async def watch_supervisor(fd: int) -> None:
    """In a worker: return when the supervisor is gone (end of file on its pipe)."""
    stream = trio.lowlevel.FdStream(os.dup(fd))
    os.close(fd)
    async with stream:
        while await stream.receive_some(64):
            pass  # the supervisor never writes; end of file means it exited
