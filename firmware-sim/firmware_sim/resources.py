"""`firmware-sim attack --resources`: one device certificate against the gateway's shared
resources, judged by a healthy device of another network.

Theory of operation: the victim (victim.py) runs for the whole command; for each attack
(hogs.py) the harness labels a baseline phase (`--baseline` s of quiet), then the attack's
setup, then the attack itself (`--seconds`), then its cleanup. The victim's PUBACK and
connect times, and the sampler's gateway RSS and data-folder bytes, are split by those
labels, so each row compares "during" with its own baseline.

Goals (a missed one makes the exit code 1 and is named on stderr): the victim's PUBACK p99
under 100 ms and connect p99 under 1 s during the attack; the gateway's peak RSS within
`--rss-budget`; the data folder growing by at most `--growth-factor` x the attacker's
accepted payload bytes plus `--growth-slack` (SQLite pages are not free; the write-ahead
log is sampled apart, `wal_peak`: its size follows the gateway's checkpoints, not what was
stored, and the gateway bounds it); with
`--operator`, every operator request answered during the HTTP attack.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from .bundle import load_bundle
from .errors import ExitCode, SimError
from .hogs import ATTACKS, Attack, HttpSlowloris, Sizes, TlsFlood
from .victim import Sampler, Victim

PUBACK_GOAL_S = 0.100
CONNECT_GOAL_S = 1.0
MIB = 1024 * 1024


def _phase(kind: str, attack: str) -> str:
    return f"{kind}:{attack}"


def _make(name: str, args: Any, attacker, host: str, port: int, sizes: Sizes) -> Attack:
    cls = ATTACKS[name]
    if cls is HttpSlowloris:
        return cls(attacker, host, port, sizes, http=args.http, operator=args.operator)
    if cls is TlsFlood:
        return cls(attacker, host, port, sizes, http=args.http)
    return cls(attacker, host, port, sizes)


def _row(name: str, attack: Attack, victim: Victim, sampler: Sampler, args: Any,
         seconds: float) -> dict[str, Any]:
    base, during = _phase("baseline", name), _phase("during", name)
    setup = _phase("setup", name)
    b, d = victim.figures(base), victim.figures(during)
    rss_before = sampler.last("rss", base)
    rss_peak = max((x for x in (sampler.peak("rss", setup), sampler.peak("rss", during))
                    if x is not None), default=None)
    data_before = sampler.last("data", base)
    data_peak = max((x for x in (sampler.peak("data", setup), sampler.peak("data", during))
                     if x is not None), default=None)
    row: dict[str, Any] = {
        "attack": name, "what": attack.what, "seconds": round(seconds, 1),
        "puback_p50_before": b["puback_p50"], "puback_p99_before": b["puback_p99"],
        "puback_p50": d["puback_p50"], "puback_p99": d["puback_p99"],
        "pubacks": d["pubacks"], "puback_timeouts": d["puback_timeouts"],
        "connect_p50_before": b["connect_p50"], "connect_p99_before": b["connect_p99"],
        "connect_p50": d["connect_p50"], "connect_p99": d["connect_p99"],
        "connects": d["connects"],
        "rss_before": rss_before, "rss_peak": rss_peak,
        "data_before": data_before, "data_growth": (None if data_before is None or
                                                    data_peak is None
                                                    else max(0, data_peak - data_before)),
        "acked_payload": attack.acked, "notes": "; ".join(attack.notes),
        "wal_peak": max((x for x in (sampler.peak("data_wal", setup),
                                     sampler.peak("data_wal", during)) if x is not None),
                        default=None),
    }
    if args.log is not None:
        lb, lp = sampler.last("log", base), sampler.peak("log", during)
        row["log_growth"] = None if lb is None or lp is None else max(0, lp - lb)
    if isinstance(attack, HttpSlowloris) and args.operator is not None and args.http:
        row["operator_ok"] = f"{attack.operator_ok}/{attack.operator_tries}"
    row["missed"] = _missed(row, args)
    return row


def _missed(row: dict[str, Any], args: Any) -> list[str]:
    missed = []
    if not row["pubacks"] or not row["puback_p99"] < PUBACK_GOAL_S:
        missed.append("PUBACK p99 < 100 ms")
    if not row["connects"] or not row["connect_p99"] < CONNECT_GOAL_S:
        missed.append("connect < 1 s")
    if row["rss_peak"] is not None and row["rss_peak"] > args.rss_budget * MIB:
        missed.append(f"RSS within {args.rss_budget:g} MiB")
    if row["data_growth"] is not None and row["data_growth"] > \
            args.growth_factor * row["acked_payload"] + args.growth_slack * MIB:
        missed.append(f"data growth <= {args.growth_factor:g} x acknowledged payload "
                      f"+ {args.growth_slack:g} MiB")
    if "operator_ok" in row:
        ok, tries = (int(x) for x in row["operator_ok"].split("/"))
        if ok < tries:
            missed.append(f"operator answered ({row['operator_ok']})")
    return missed


def _ms(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f">{x:.0f}s" if x >= 30 else (f"{x * 1000:.0f}" if x >= 0.01 else
                                          f"{x * 1000:.1f}")


def _mb(x: int | None) -> str:
    return "-" if x is None else f"{x / MIB:.1f}"


def print_table(rows: list[dict[str, Any]], out: Any) -> None:
    """One line per attack; times in ms (p50/p99, before -> during), sizes in MiB."""
    head = (f"{'attack':<19} {'PUBACK ms before':>16} {'PUBACK ms during':>16} "
            f"{'connect ms before':>17} {'connect ms during':>17} {'RSS MiB':>13} "
            f"{'data +MiB':>9} {'acked MiB':>9}  goals")
    print(head, file=out)
    print("-" * len(head), file=out)
    for r in rows:
        goals = "met" if not r["missed"] else "MISSED: " + ", ".join(r["missed"])
        print(f"{r['attack']:<19} "
              f"{_ms(r['puback_p50_before']) + '/' + _ms(r['puback_p99_before']):>16} "
              f"{_ms(r['puback_p50']) + '/' + _ms(r['puback_p99']):>16} "
              f"{_ms(r['connect_p50_before']) + '/' + _ms(r['connect_p99_before']):>17} "
              f"{_ms(r['connect_p50']) + '/' + _ms(r['connect_p99']):>17} "
              f"{_mb(r['rss_before']) + '->' + _mb(r['rss_peak']):>13} "
              f"{_mb(r['data_growth']):>9} {_mb(r['acked_payload']):>9}  {goals}", file=out)
    for r in rows:
        extra = [r["notes"]]
        if "log_growth" in r:
            extra.append(f"log +{_mb(r['log_growth'])} MiB")
        if r.get("wal_peak") is not None:
            extra.append(f"WAL peak {_mb(r['wal_peak'])} MiB")
        if "operator_ok" in r:
            extra.append(f"operator requests answered {r['operator_ok']}")
        extra.append(f"{r['pubacks']} PUBACKs ({r['puback_timeouts']} timed out), "
                     f"{r['connects']} connects during")
        print(f"  {r['attack']}: " + "; ".join(x for x in extra if x), file=out)


def sizes_of(args: Any) -> Sizes:
    return Sizes(retained=args.retained, filters=args.filters, sessions=args.sessions,
                 fanout_publishes=args.fanout_publishes, fanout_bytes=args.fanout_bytes,
                 readings=args.readings, slow_http=args.slow_http, pending=args.pending,
                 flooders=args.flooders, source=args.source)


def run_resources(args: Any) -> int:
    """The command: run the selected attacks in turn, print the table, exit 1 on a miss."""
    if args.victim_bundle is None and not args.cleanup_only:
        raise SimError("--resources needs --victim-bundle (the device that measures)")
    attacker = load_bundle(args.bundle)
    host, port = args.gateway
    sizes = sizes_of(args)
    names = args.only or list(ATTACKS)
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        raise SimError(f"--only {', '.join(unknown)}: not one of {', '.join(ATTACKS)}")
    if args.cleanup_only:
        for name in names:
            _make(name, args, attacker, host, port, sizes).cleanup()
        return ExitCode.OK
    victim_bundle = load_bundle(args.victim_bundle)
    if victim_bundle.network == attacker.network:
        raise SimError("the attacker and the victim are the same network")
    folders: dict[str, Path] = {}
    if args.data is not None:
        folders["data"] = args.data
    if args.log is not None:
        folders["log"] = args.log
    victim = Victim(victim_bundle, host, port)
    sampler = Sampler(args.gateway_pid, folders)
    rows = []
    victim.start()
    sampler.start()
    try:
        for name in names:
            attack = _make(name, args, attacker, host, port, sizes)
            victim.phase = sampler.phase = _phase("baseline", name)
            time.sleep(args.baseline)
            sampler.sample()
            victim.phase = sampler.phase = _phase("setup", name)
            print(f"{name}: setting up", file=sys.stderr, flush=True)
            attack.setup()
            victim.phase = sampler.phase = _phase("during", name)
            print(f"{name}: attacking for {args.seconds:g} s", file=sys.stderr, flush=True)
            start = time.monotonic()
            attack.run(start + args.seconds)
            took = time.monotonic() - start
            sampler.sample()
            victim.phase = sampler.phase = _phase("cleanup", name)
            if not args.no_cleanup:
                attack.cleanup()
            rows.append(_row(name, attack, victim, sampler, args, took))
    finally:
        sampler.stop()
        victim.stop()
    if args.json:
        print(json.dumps({"rows": rows, "goals": {
            "puback_p99_s": PUBACK_GOAL_S, "connect_p99_s": CONNECT_GOAL_S,
            "rss_budget_mib": args.rss_budget, "growth_factor": args.growth_factor,
            "growth_slack_mib": args.growth_slack}}, default=str))
    else:
        print_table(rows, sys.stdout)
    missed = [(r["attack"], m) for r in rows for m in r["missed"]]
    for name, what in missed:
        print(f"goal missed: {name}: {what}", file=sys.stderr)
    return ExitCode.GOAL_MISSED if missed else ExitCode.OK
