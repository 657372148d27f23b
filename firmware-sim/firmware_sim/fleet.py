"""Many simulated devices at once: worker processes, each one selector `Loop` thread.

One Python process drives a few thousand TLS clients on one core; past that, devices are
spread over worker processes (`processes`, default: one per 2,000 devices, at most the CPU
count). Each worker sums its devices' `DeviceStats` and sends the totals to the parent
every `PROGRESS_EVERY` seconds and once at the end with one row per device; the parent
prints a live one-line summary (on a TTY) and the final table.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .bundle import Bundle, load_bundle
from .device import SESSION_EXPIRY, Backoff, DeviceStats, SimDevice
from .loop import Loop

PROGRESS_EVERY = 0.5
PER_PROCESS = 2000
STOP_GRACE = 10.0  # seconds for devices to drain acks and disconnect


@dataclass(frozen=True, slots=True)
class FleetOptions:
    host: str
    port: int
    rate: float = 1.0
    duration: float = math.inf  # until stopped
    seed: int = 0
    model: dict[str, Any] | None = None
    backoff: Backoff = Backoff()
    events: str | None = None  # JSON-lines file of every device event
    start_spread: float = 0.0  # seconds over which device starts are spread
    mqtt: str = "3.1.1"  # or "5"
    session_expiry: int = SESSION_EXPIRY  # MQTT 5 only


@dataclass
class FleetResult:
    totals: dict[str, int]
    devices: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _sum(rows: list[dict[str, int]]) -> dict[str, int]:
    return {f: sum(r.get(f, 0) for r in rows) for f in DeviceStats.FIELDS}


class _EventWriter:
    def __init__(self, path: str | None) -> None:
        self._file = open(path, "a", buffering=1, encoding="utf-8") if path else None
        self._lock = threading.Lock()

    def __call__(self, device: SimDevice, kind: str, fields: dict[str, Any]) -> None:
        if self._file is None:
            return
        line = json.dumps({"time": time.time(), "device": device.bundle.name, "event": kind,
                           **fields}, default=str)
        with self._lock:
            self._file.write(line + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def run_devices(dirs: list[str], opts: FleetOptions, report: Callable[[dict[str, Any]], None],
                stop: Any) -> None:
    """Run one device per bundle folder until `opts.duration` passes or `stop` is set.

    Calls `report({"totals": ...})` every PROGRESS_EVERY s, then once
    `{"totals": ..., "devices": [...], "final": True}`.
    """
    from .model import THERMOSTAT

    loop = Loop()
    thread = threading.Thread(target=loop.run, name="firmware-sim-loop", daemon=True)
    thread.start()
    events = _EventWriter(opts.events)
    devices: list[SimDevice] = []
    try:
        for i, d in enumerate(dirs):
            bundle: Bundle = load_bundle(d)
            device = SimDevice(bundle, loop, opts.host, opts.port,
                               model=opts.model or THERMOSTAT, rate=opts.rate,
                               seed=opts.seed, backoff=opts.backoff, on_event=events,
                               mqtt=opts.mqtt, session_expiry=opts.session_expiry)
            devices.append(device)
            device.start(delay=opts.start_spread * i / len(dirs))
        deadline = time.monotonic() + opts.duration
        while not stop.is_set() and time.monotonic() < deadline:
            stop.wait(min(PROGRESS_EVERY, max(0.0, deadline - time.monotonic())))
            report({"totals": _sum([d.stats.as_dict() for d in devices])})
        done = threading.Semaphore(0)
        for device in devices:
            device.stop(done.release)
        give_up = time.monotonic() + STOP_GRACE
        for _ in devices:
            if not done.acquire(timeout=max(0.0, give_up - time.monotonic())):
                break
    finally:
        loop.stop()
        thread.join(timeout=STOP_GRACE)
        if not thread.is_alive():
            loop.close()
        events.close()
    rows = [{"device": d.bundle.name, **d.stats.as_dict()} for d in devices]
    report({"totals": _sum(rows), "devices": rows, "final": True, "loop_errors": loop.errors})


def _worker(dirs: list[str], opts: FleetOptions, queue: Any, stop: Any, index: int,
            own_process: bool = False) -> None:
    if own_process:  # Ctrl-C reaches the whole process group: the parent alone decides
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        run_devices(dirs, opts, lambda r: queue.put((index, r)), stop)
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # reported, so the parent names it instead of hanging
        queue.put((index, {"totals": {}, "devices": [], "final": True, "error": repr(exc)}))


def default_processes(count: int) -> int:
    return max(1, min(os.cpu_count() or 1, math.ceil(count / PER_PROCESS)))


def run_fleet(bundles: list[Path], opts: FleetOptions, *, processes: int | None = None,
              progress: Callable[[dict[str, int], int], None] | None = None) -> FleetResult:
    """Run the fleet to the end and return every device's counters.

    `progress(totals, count)` is called as totals arrive (for the live line).
    """
    processes = min(processes or default_processes(len(bundles)), len(bundles))
    shards = [[str(b) for b in bundles[i::processes]] for i in range(processes)]
    started = time.monotonic()
    latest: dict[int, dict[str, Any]] = {}
    finals: dict[int, dict[str, Any]] = {}
    if processes == 1:
        import queue as queue_mod
        q: Any = queue_mod.Queue()
        stop: Any = threading.Event()
        workers: list[Any] = [threading.Thread(target=_worker, args=(shards[0], opts, q, stop, 0),
                                               daemon=True)]
    else:
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        stop = ctx.Event()
        workers = [ctx.Process(target=_worker, args=(shard, opts, q, stop, i, True),
                               daemon=True)
                   for i, shard in enumerate(shards)]
    for w in workers:
        w.start()
    try:
        while len(finals) < len(workers):
            try:
                index, msg = q.get(timeout=1.0)
            except Exception:  # queue.Empty: check the workers are alive
                if not any(w.is_alive() for w in workers):
                    break
                continue
            latest[index] = msg
            if msg.get("final"):
                finals[index] = msg
            if progress is not None:
                progress(_sum([m["totals"] for m in latest.values()]), len(bundles))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop the devices cleanly, keep the figures
        stop.set()
        give_up = time.monotonic() + STOP_GRACE * 2
        while len(finals) < len(workers) and time.monotonic() < give_up:
            try:
                index, msg = q.get(timeout=max(0.1, give_up - time.monotonic()))
            except Exception:  # queue.Empty: a worker died; report what we have
                break
            if msg.get("final"):
                finals[index] = msg
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=STOP_GRACE)
    rows = [row for m in finals.values() for row in m.get("devices", [])]
    failures = [m["error"] for m in finals.values() if m.get("error")]
    if failures:
        raise RuntimeError("; ".join(failures))
    return FleetResult(_sum(rows), sorted(rows, key=lambda r: r["device"]),
                       time.monotonic() - started)


def live_line(totals: dict[str, int], count: int) -> str:
    return (f"connected {totals.get('connected', 0)}/{count}  sent {totals.get('sent', 0)}  "
            f"acked {totals.get('acked', 0)}  errors {totals.get('errors', 0)}  "
            f"reconnects {totals.get('reconnects', 0)}")


COLUMNS = ("connects", "failures", "sent", "acked", "errors", "reconnects", "controls", "dropped")


def print_table(result: FleetResult, out: TextIO = sys.stdout, max_rows: int = 50) -> None:
    """The final table: one row per device (first `max_rows`), then the totals."""
    for row in [*result.devices, result.totals]:
        row["failures"] = row.get("connect_failures", 0)
    head = f"{'device':<36}  " + "  ".join(f"{c:>10}" for c in COLUMNS)
    print(head, file=out)
    print("-" * len(head), file=out)
    for row in result.devices[:max_rows]:
        print(f"{row['device']:<36}  " + "  ".join(f"{row[c]:>10}" for c in COLUMNS), file=out)
    if len(result.devices) > max_rows:
        print(f"... {len(result.devices) - max_rows} more devices", file=out)
    print("-" * len(head), file=out)
    print(f"{'total (' + str(len(result.devices)) + ' devices)':<36}  "
          + "  ".join(f"{result.totals[c]:>10}" for c in COLUMNS), file=out)
    rate = result.totals["acked"] / result.seconds if result.seconds else 0.0
    print(f"{result.seconds:.1f} s, {rate:.0f} acknowledged readings/s", file=out)
