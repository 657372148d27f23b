"""Resource isolation under attack: a real gateway, `firmware-sim attack --resources`, and a
timed restart after each attack.

    python -m bench.isolation [--seconds 20] [--out bench/results/isolation.json] [-- ARGS]

What it does: makes a dev PKI with our CA (`fleet-ca`: two device networks and an
operator), starts `fleet-gateway serve --data DIR --http ...` with its default limits (none
lifted), then for each attack runs `firmware-sim attack --resources --only <attack>
--no-cleanup` (the attacker's leftovers still in place), restarts the gateway (SIGTERM, then
a new process timed until its `listening` log line: what a restart after that attack costs),
erases the leftovers with `--cleanup-only`, and prints one table. ARGS after `--` go to
firmware-sim (e.g. `-- --retained 1000`). Exit code: firmware-sim's worst (1 = a goal
missed), or 1 when a restart took 5 s or more.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from firmware_sim.victim import rss_bytes

from bench.machine import _cpu_model, _git_commit, _memory_gib, loadavg
from bench.pki import _run, fleet_ca_env, make_pki
from bench.servers import free_port

BIN = Path(sys.executable).parent
RESTART_GOAL_S = 5.0
ATTACKS = ("subscribe-freeze", "offline-fanout", "writer-starvation", "log-amplification",
           "http-slowloris", "pending-handshakes", "tls-flood")


class Gateway:
    """`fleet-gateway serve` on fixed ports, restartable; its log is one file."""

    def __init__(self, pki, work: Path) -> None:
        self.pki, self.work = pki, work
        self.mqtt, self.http = free_port(), free_port()
        self.data = work / "data"
        self.log = work / "gateway.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        """Start; seconds until both `listening` lines."""
        cmd = [str(BIN / "fleet-gateway"), "serve", "--ca-home", str(self.pki.home),
               "--mqtt", f"127.0.0.1:{self.mqtt}", "--http", f"127.0.0.1:{self.http}",
               "--data", str(self.data)]
        offset = self.log.stat().st_size if self.log.exists() else 0
        start = time.monotonic()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        while True:
            with open(self.log, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
            lines = [ln for ln in text.splitlines() if '"listening"' in ln]
            if any('"mqtt"' in ln for ln in lines) and any('"http"' in ln for ln in lines):
                return time.monotonic() - start
            if self.proc.poll() is not None:
                raise SystemExit(f"fleet-gateway exited {self.proc.returncode}: "
                                 f"{text.strip().splitlines()[-1:]}")
            if time.monotonic() - start > 600:
                raise SystemExit("fleet-gateway: no listening line in 600 s")
            time.sleep(0.02)

    def stop(self) -> float:
        assert self.proc is not None
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return time.monotonic() - start


def _sim(gw: Gateway, pki, extra: list[str]) -> subprocess.CompletedProcess:
    a, v = pki.devices[0].cert.parent, pki.devices[1].cert.parent
    cmd = [str(BIN / "firmware-sim"), "attack", "--bundle", str(a), "--victim-bundle", str(v),
           "--gateway", f"127.0.0.1:{gw.mqtt}", *extra]
    return subprocess.run(cmd, capture_output=True, text=True)


def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="isolation-"))
    pki = make_pki(work, 2)
    operator = work / "operator"
    _run([str(BIN / "fleet-ca"), "issue", "operator", "--name", "bench", "--out",
          str(operator)], env=fleet_ca_env(pki.home))
    gw = Gateway(pki, work)
    gw.start()
    rows, worst, failed = [], 0, []
    try:
        for attack in args.only or ATTACKS:
            assert gw.proc is not None
            done = _sim(gw, pki, [
                "--resources", "--only", attack, "--no-cleanup", "--json",
                "--seconds", str(args.seconds), "--gateway-pid", str(gw.proc.pid),
                "--data", str(gw.data), "--log", str(gw.log),
                "--http", f"127.0.0.1:{gw.http}", "--operator", str(operator), *args.sim])
            sys.stderr.write(done.stderr)
            stopped = gw.stop()
            started = gw.start()
            if done.returncode not in (0, 1) or not done.stdout.strip():
                last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
                failed.append(f"{attack}: firmware-sim exited {done.returncode}: {last}")
                worst = max(worst, done.returncode)
                _sim(gw, pki, ["--resources", "--only", attack, "--cleanup-only", *args.sim])
                continue
            worst = max(worst, done.returncode)
            report = json.loads(done.stdout.strip().splitlines()[-1])
            row = report["rows"][0]
            row["restart_stop_s"], row["restart_start_s"] = round(stopped, 2), round(started, 2)
            time.sleep(2.0)  # what the restarted process holds once it has loaded its state
            row["rss_after_restart"] = rss_bytes(gw.proc.pid)
            if stopped + started >= RESTART_GOAL_S:
                row["missed"].append("restart < 5 s")
                worst = max(worst, 1)
            clean = _sim(gw, pki, ["--resources", "--only", attack, "--cleanup-only",
                                   *args.sim])
            if clean.returncode != 0:
                row["notes"] += f"; cleanup failed: {clean.stderr.strip()[-200:]}"
            gw.stop()  # the next attack starts from a fresh process, not this one's heap
            gw.start()
            rows.append(row)
            print(f"{attack}: done (restart {stopped:.1f} + {started:.1f} s)",
                  file=sys.stderr, flush=True)
    finally:
        if gw.proc is not None and gw.proc.poll() is None:
            gw.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)  # the fan-out can leave gigabytes
    from firmware_sim.resources import print_table

    print(f"# {_cpu_model()}, {os.cpu_count()} cores (shared), {_memory_gib()} GiB, "
          f"load {loadavg()}, commit {_git_commit()}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, gateway default limits, "
          f"{args.seconds:g} s per attack")
    print_table(rows, sys.stdout)
    for r in rows:
        rss = r.get("rss_after_restart")
        print(f"  {r['attack']}: restart (leftovers in place) {r['restart_stop_s']} s stop + "
              f"{r['restart_start_s']} s until listening; RSS 2 s later "
              f"{'-' if rss is None else f'{rss / 2**20:.1f} MiB'}")
    for line in failed:
        print(f"  NOT MEASURED: {line}")
    if args.out:
        args.out.write_text(json.dumps({"rows": rows}, indent=1, default=str))
    return worst


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    sim = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="python -m bench.isolation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--only", action="append", choices=ATTACKS)
    p.add_argument("--out", type=Path, help="also write the rows as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the work folder (PKI, data, log)")
    args = p.parse_args(argv)
    args.sim = sim
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

