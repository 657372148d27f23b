"""What the figures were measured on: CPU, memory, library versions, load."""

from __future__ import annotations

import os
import platform
import ssl
import subprocess
from typing import Any

from bench import servers


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _openssl() -> str:
    try:
        cli = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        cli = "openssl CLI missing"
    return f"{ssl.OPENSSL_VERSION} (Python's ssl); CLI: {cli}"


def _git_commit() -> str:
    out = subprocess.run(["git", "-C", str(servers.REPO), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def describe(server_cpus: tuple[int, ...], loadgen_cpus: tuple[int, ...]) -> dict[str, Any]:
    if set(server_cpus) & set(loadgen_cpus):
        pinning = "servers and load generator share the cores (fewer than 2 available)"
    else:
        pinning = (f"servers pinned to core(s) {list(server_cpus)}, load generator to "
                   f"{list(loadgen_cpus)} (os.sched_setaffinity)")
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "pinning": pinning,
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssl": _openssl(),
        "mosquitto": servers.mosquitto_version(),
        "amqtt": servers.amqtt_version(),
        "git_commit": _git_commit(),
        "loadavg_before": loadavg(),
    }
