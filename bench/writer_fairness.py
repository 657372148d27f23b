"""The fair writer under a QoS 0 batch flood: a healthy network's PUBACK latency, before and
after.

    python -m bench.writer_fairness [--seconds 20] [--before DIR] [--out FILE.json]

What it does: makes a dev PKI with our CA (two device networks), then for each variant starts
`fleet-gateway serve --data DIR` (a fresh data folder) and runs `firmware-sim attack
--resources --only writer-starvation`: one network floods QoS 0 batch reports of 1,000
readings as fast as TCP takes them while a device of the other network publishes one QoS 1
report every 0.25 s (reconnecting every 2 s) and times each PUBACK, before (baseline) and
during the flood. Variants:
- `before`: the gateway code of the tree `--before DIR` (e.g. `git archive main | tar -x -C
  DIR`), run with `PYTHONPATH=DIR`, default limits;
- `after`: this tree, default limits (the readings rate, 10,000/s per network, included);
- `after-no-rate`: this tree with `max_readings_per_second_per_network` lifted, so the
  figure is the fair writer's alone.
Prints one table (PUBACK p50/p99 in ms before -> during, PUBACKs during and how many timed
out, peak RSS, readings the flooder got acknowledged by TCP). Never fails on a timing.
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

from bench.machine import _cpu_model, _git_commit, loadavg
from bench.pki import make_pki
from bench.servers import free_port

BIN = Path(sys.executable).parent
NO_RATE = "[limits]\nmax_readings_per_second_per_network = 1e12\n" \
          "readings_burst_per_network = 1000000000000\n"


def _start(pki, work: Path, tree: Path | None, config: Path | None):
    data, log, port = work / "data", work / "gateway.log", free_port()
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--ca-home", str(pki.home),
           "--mqtt", f"127.0.0.1:{port}", "--data", str(data)]
    if config is not None:
        cmd += ["--config", str(config)]
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    out = open(log, "ab")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                            cwd=tree or Path.cwd(), stdin=subprocess.DEVNULL)
    out.close()
    start = time.monotonic()
    while '"listening"' not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() - start > 120:
            raise SystemExit(f"gateway did not start: {log.read_text()[-500:]}")
        time.sleep(0.05)
    return proc, port, data


def _variant(name: str, pki, work: Path, tree: Path | None, config: Path | None,
             seconds: float) -> dict:
    work.mkdir(parents=True)
    proc, port, data = _start(pki, work, tree, config)
    try:
        a, v = pki.devices[0].cert.parent, pki.devices[1].cert.parent
        done = subprocess.run(
            [str(BIN / "firmware-sim"), "attack", "--bundle", str(a), "--victim-bundle",
             str(v), "--gateway", f"127.0.0.1:{port}", "--resources", "--only",
             "writer-starvation", "--json", "--seconds", str(seconds), "--gateway-pid",
             str(proc.pid), "--data", str(data)], capture_output=True, text=True)
        if not done.stdout.strip():
            raise SystemExit(f"{name}: firmware-sim exited {done.returncode}: "
                             f"{done.stderr.strip()[-500:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])["rows"][0]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    row["variant"] = name
    print(f"{name}: done", file=sys.stderr, flush=True)
    return row


def _ms(x) -> str:
    return "-" if x is None else f"{x * 1000:.1f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.writer_fairness", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0, help="flood length (20)")
    p.add_argument("--before", type=Path, help="a tree with the old gateway code to compare")
    p.add_argument("--out", type=Path, help="also write the rows as JSON here")
    p.add_argument("--only", action="append", choices=("before", "after", "after-no-rate"),
                   help="run only these variants (repeatable)")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="writer-fairness-"))
    try:
        pki = make_pki(work, 2)
        no_rate = work / "no-rate.toml"
        no_rate.write_text(NO_RATE)
        variants = ([("before", args.before.resolve(), None)] if args.before else []) + [
            ("after", None, None), ("after-no-rate", None, no_rate)]
        variants = [v for v in variants if not args.only or v[0] in args.only]
        rows = [_variant(name, pki, work / name, tree, config, args.seconds)
                for name, tree, config in variants]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"# {_cpu_model()}, {os.cpu_count()} cores (shared), load {loadavg()}, "
          f"commit {_git_commit()}, {args.seconds:g} s flood of QoS 0 batches (1,000 readings)")
    print(f"{'variant':<14} {'PUBACK ms p50/p99 before':>25} {'during':>17} {'PUBACKs':>8} "
          f"{'timed out':>9} {'RSS MiB before->peak':>21}  flooder")
    for r in rows:
        rss = (f"{(r['rss_before'] or 0) / 2**20:.0f}->{(r['rss_peak'] or 0) / 2**20:.0f}")
        print(f"{r['variant']:<14} "
              f"{_ms(r['puback_p50_before']) + '/' + _ms(r['puback_p99_before']):>25} "
              f"{_ms(r['puback_p50']) + '/' + _ms(r['puback_p99']):>17} {r['pubacks']:>8} "
              f"{r['puback_timeouts']:>9} {rss:>21}  {r['notes']}")
    if args.out:
        args.out.write_text(json.dumps({"rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
