"""What every figure shares: the sizes, the `Bench` context, one measured load window.

A figure is a function ``Bench -> list[Row]``. `per_system` starts each system once and turns
"cannot start" into a row that says why (for fleetgate: which issue it waits for), never into a
number.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import servers
from bench.loadgen import LoadError, LoadRun, LoadSpec
from bench.pki import Pki
from bench.results import Row
from bench.servers import Server, Unavailable

BROKERS = ("fleetgate", "mosquitto", "amqtt")
# Figures 1 and 5 also measure the floor under fleetgate: a bare trio mTLS server.
CONNECTING = (*BROKERS, "trio-floor")


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big each figure is: `full` for the record, `quick` for the smoke test."""

    ca_fleet: int
    ca_openssl: int
    connects: int
    publish_seconds: float
    publish_clients: tuple[int, ...]
    stored_seconds: float
    overload_seconds: float
    idle_connections: tuple[int, ...]
    revoke_wait: float
    devices: int
    storm: int
    failover_devices: int = 100
    failover_seconds: float = 40.0

    @classmethod
    def full(cls) -> Sizes:
        return cls(ca_fleet=2000, ca_openssl=100, connects=2000, publish_seconds=5.0,
                   publish_clients=(10, 100), stored_seconds=3.0, overload_seconds=10.0,
                   idle_connections=(2000, 10000), revoke_wait=5.0, devices=20, storm=10000)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(ca_fleet=5, ca_openssl=3, connects=10, publish_seconds=0.3,
                   publish_clients=(2,), stored_seconds=0.3, overload_seconds=0.5,
                   idle_connections=(10,), revoke_wait=5.0, devices=4, storm=10,
                   failover_devices=4, failover_seconds=15.0)


@dataclass
class Bench:
    """Everything a figure needs: certificates, cores, sizes, where to put files."""

    pki: Pki
    work: Path
    sizes: Sizes
    runs: int
    systems: tuple[str, ...]
    server_cpus: tuple[int, ...]
    loadgen_cpus: tuple[int, ...]
    log: Callable[[str], None] = print
    revoked: set[str] = field(default_factory=set)

    @property
    def workers(self) -> int:
        return max(1, len(self.loadgen_cpus))

    def spec(self, server: Server, mode: str, **kw: Any) -> LoadSpec:
        devices = tuple((str(d.cert), str(d.key)) for d in self.pki.devices
                        if d.uuid not in self.revoked)
        return LoadSpec(mode=mode, host="127.0.0.1", port=server.port, root=str(self.pki.root),
                        devices=devices, workers=self.workers, cpus=self.loadgen_cpus, **kw)

    @contextlib.contextmanager
    def server(self, system: str, **kw: Any) -> Iterator[Server]:
        """Start ``system`` pinned to the server cores; raises Unavailable with the reason."""
        if system == "mosquitto":
            cm = servers.mosquitto(self.pki, self.work, self.server_cpus, **kw)
        elif system == "amqtt":
            cm = servers.amqtt(self.pki, self.work, self.server_cpus)
        elif system == "fleetgate":
            cm = servers.fleetgate(self.pki, self.work, self.server_cpus, **kw)
        elif system == "trio-floor":
            cm = servers.trio_floor(self.pki, self.work, self.server_cpus)
        else:
            raise ValueError(system)
        with cm as server:
            yield server

    def wanted(self, system: str) -> bool:
        return system in self.systems


def load_run(bench: Bench, server: Server, spec: LoadSpec, timeout: float) -> dict[str, Any]:
    """One measured window: the server's CPU seconds are read just outside it."""
    with LoadRun(spec) as run:
        run.wait_ready()
        cpu0 = server.cpu_seconds()
        run.go()
        result = run.wait_results(timeout)
        cpu = server.cpu_seconds() - cpu0
    busy = result.loadgen_cpu_s / (result.seconds * bench.workers) if result.seconds else 0.0
    out = result.as_dict()
    out.update(
        value=round(result.rate, 1),
        server_cpu_s=round(cpu, 2),
        per_cpu_s=round(result.ok / cpu, 1) if cpu > 0 else None,
        loadgen_busy=round(busy, 2),
    )
    if not server.alive():
        out["server_died"] = True
    return out


def server_notes(row: Row, server: Server) -> None:
    row.notes.extend(n for n in server.notes if n not in row.notes)


def stopped(row: Row, exc: Exception) -> None:
    """A run failed: keep the runs that worked, or say why there are none."""
    if row.runs:
        row.notes.append(f"stopped after {len(row.runs)} runs: {exc}")
    else:
        row.unavailable = f"failed: {exc}"


def note_saturation(row: Row) -> None:
    if any(r.get("loadgen_busy", 0) > 0.9 for r in row.runs):
        row.notes.append("load generator saturated in some runs: the figure is a lower bound")
    if any(r.get("failed") for r in row.runs):
        failed = sum(r.get("failed", 0) for r in row.runs)
        row.notes.append(f"{failed} attempts failed over all runs (runs[].errors has the "
                         "reasons)")
    if any(r.get("server_died") for r in row.runs):
        row.notes.append("the server died during a run")


def per_system(bench: Bench, rows: dict[tuple[str, str], Row], systems: tuple[str, ...],
                cases: list[str], body: Callable[[Server, str, Row], None],
                **server_kw: Any) -> None:
    """Start each system once, measure every case on it, record why when it cannot."""
    for system in systems:
        if not bench.wanted(system):
            for case in cases:
                rows.pop((case, system), None)
            continue
        try:
            with bench.server(system, **server_kw) as server:
                for case in cases:
                    bench.log(f"  {system}: {case}")
                    row = rows[(case, system)]
                    server_notes(row, server)
                    try:
                        body(server, case, row)
                    except (LoadError, Unavailable) as exc:
                        stopped(row, exc)
                    note_saturation(row)
        except Unavailable as exc:
            for case in cases:
                rows[(case, system)].unavailable = str(exc)
