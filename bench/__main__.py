"""`python -m bench` (what `make bench` runs): measure, write JSON, update the docs table.

Examples:
  python -m bench                          # every figure, 3 runs, full sizes (about an hour)
  python -m bench --quick --runs 1         # tiny sizes: checks the harness, not the numbers
  python -m bench --only 6 1 --runs 5      # some figures
  python -m bench --systems mosquitto pipeline --no-doc

Exit codes: 0 done; 2 bad arguments; 3 no certificates could be made; 4 the results document
came out malformed; 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import machine, servers
from bench.context import Bench, Sizes
from bench.figures import FIGURES
from bench.pki import PkiError, make_pki
from bench.report import render, update_doc
from bench.results import SCHEMA, check_document, write_json
from bench.servers import REPO

SYSTEMS = ("fleetgate", "mosquitto", "amqtt", "pipeline", "trio-floor")
EXIT_PKI, EXIT_MALFORMED, EXIT_INTERRUPTED = 3, 4, 130


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test)")
    p.add_argument("--only", nargs="+", metavar="FIGURE", choices=list(FIGURES),
                   help="figures to run, by the issue's numbers 1-7 (default: all)")
    p.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results",
                   help="folder for the JSON results (default bench/results/)")
    p.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS),
                   help="systems to measure (default: all)")
    p.add_argument("--doc", type=Path, default=None,
                   help="markdown file whose '## Side by side' section is rewritten "
                        "(default docs/benchmarks.md, none with --quick)")
    p.add_argument("--no-doc", action="store_true", help="do not touch the docs")
    p.add_argument("--note", default="", help="a sentence for the doc about this run")
    p.add_argument("--keep-work", action="store_true",
                   help="keep the temporary folder (certificates, server logs)")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.doc is None and not args.quick and not args.no_doc:
        args.doc = REPO / "docs" / "benchmarks.md"
    if args.no_doc:
        args.doc = None
    return args


def _raise_nofile() -> int:
    """Figure 5 holds 10,000 connections: lift the open-files limit to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _cpu_plan() -> tuple[tuple[int, ...], tuple[int, ...]]:
    import os

    cpus = tuple(sorted(os.sched_getaffinity(0)))
    if len(cpus) >= 2:
        return cpus[:1], cpus[1:]
    return cpus, cpus


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    sizes = Sizes.quick() if args.quick else Sizes.full()
    figures = args.only or list(FIGURES)
    nofile = _raise_nofile()
    server_cpus, loadgen_cpus = _cpu_plan()
    work = Path(tempfile.mkdtemp(prefix="fleetgate-bench-"))
    started = _now()
    command = " ".join(["python -m bench", shlex.join(argv if argv is not None else sys.argv[1:])]
                       ).strip()
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    try:
        info = machine.describe(server_cpus, loadgen_cpus)
        log(f"bench: work folder {work}; open files limit {nofile}")
        try:
            pki = make_pki(work / "pki", sizes.devices)
        except PkiError as exc:
            print(f"bench: no certificates: {exc}", file=sys.stderr)
            return EXIT_PKI
        info["certificates"] = (f"made by {pki.tool}" + (
            f" (fleet-ca not usable: {pki.fallback_reason})" if pki.fallback_reason else ""))
        log(f"bench: certificates {info['certificates']}")
        bench = Bench(pki=pki, work=work, sizes=sizes, runs=args.runs,
                      systems=tuple(args.systems), server_cpus=server_cpus,
                      loadgen_cpus=loadgen_cpus, log=log)
        rows = []
        for fig in FIGURES:
            if fig not in figures:
                continue
            log(f"figure {fig}")
            t0 = time.monotonic()
            rows += [r.as_dict() for r in FIGURES[fig](bench)]
            log(f"figure {fig}: {time.monotonic() - t0:.1f} s")
        info["loadavg_after"] = machine.loadavg()
        # amqtt's own venv is created by the first figure that runs it: read it afterwards.
        info["amqtt"] = servers.amqtt_version()
        info["shared_note"] = args.note or (
            "The machine was shared with other work during the run (other engineers' builds "
            "and test suites), which the load averages show; figures per server CPU-second "
            "are the ones least affected." if float(info["loadavg_before"].split()[0]) > 0.3
            else "")
        doc = {
            "schema": SCHEMA, "command": command, "quick": args.quick, "runs": args.runs,
            "figures": figures, "systems": list(args.systems),
            "skipped": [f for f in FIGURES if f not in figures],
            "started": started, "finished": _now(), "machine": info, "rows": rows,
        }
        problems = check_document(doc)
        stamp = started.replace("-", "").replace(":", "")
        out = args.out / f"{stamp}{'-quick' if args.quick else ''}.json"
        write_json(out, doc)
        log(f"bench: results in {out}")
        if problems:
            for p in problems:
                print(f"bench: malformed result: {p}", file=sys.stderr)
            return EXIT_MALFORMED
        if args.doc:
            try:
                shown = out.resolve().relative_to(REPO).as_posix()
            except ValueError:
                shown = out.as_posix()
            update_doc(args.doc, render(doc, shown))
            log(f"bench: updated {args.doc}")
        return 0
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if args.keep_work:
            log(f"bench: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
