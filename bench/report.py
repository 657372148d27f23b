"""Render a results document as the "## Side by side" section of docs/benchmarks.md.

Only that section is replaced (up to the next "## " heading); the rest of the file belongs to
others (the codec engineer's "## MQTT codec", for one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.figures import TITLES
from bench.servers import AMQTT_VERSION

HEADING = "## Side by side"
ORDER = ["1", "2", "3", "4", "5", "6", "7", "8"]
OURS = ("fleetgate", "fleet-ca")


def _num(x: float | None) -> str:
    if x is None:
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"
    return f"{x:.3g}"


def _cell(summary: dict[str, float] | None) -> str:
    if not summary:
        return "n/a"
    if summary["min"] == summary["max"]:
        return _num(summary["median"])
    return f"{_num(summary['median'])} ({_num(summary['min'])} to {_num(summary['max'])})"


def _ratio(ours: dict[str, Any] | None, theirs: dict[str, Any], key: str) -> str:
    if ours is None or ours.get("unavailable") or theirs.get("unavailable"):
        return "n/a"
    a, b = ours.get(key), theirs.get(key)
    if not a or not b or not b["median"]:
        return "n/a"
    return f"{a['median'] / b['median']:.2f}x"


def _table(rows: list[dict[str, Any]]) -> list[str]:
    with_cpu = any(r.get("per_cpu_s") for r in rows)
    lower = rows[0].get("lower_is_better")
    unit = rows[0]["unit"] + (" (lower is better)" if lower else "")
    head = ["case", "system", f"{unit}: median (min to max)"]
    if with_cpu:
        head.append("per CPU-second")
    head.append("ours ÷ theirs" + (", per CPU-second" if with_cpu else ""))
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in dict.fromkeys(r["case"] for r in rows):
        group = [r for r in rows if r["case"] == case]
        ours = next((r for r in group if r["system"] in OURS), None)
        for r in group:
            if r.get("unavailable"):
                value = r["unavailable"]
            elif r.get("value") is None and r.get("verdict"):
                value = r["verdict"]
            else:
                value = _cell(r.get("value"))
            cells = [case, r["system"], value]
            if with_cpu:
                cells.append("" if r.get("unavailable") else _cell(r.get("per_cpu_s")))
            if r is ours:
                ratio = "(ours)"
            else:
                ratio = _ratio(ours, r, "value")
                if with_cpu:
                    ratio += ", " + _ratio(ours, r, "per_cpu_s")
            cells.append(ratio)
            out.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return out


def _find(rows: list[dict[str, Any]], figure: str, system: str,
          case: str | None = None) -> dict[str, Any] | None:
    for r in rows:
        if r["figure"] == figure and r["system"].startswith(system) and (
                case is None or r["case"] == case):
            return r
    return None


def _median(row: dict[str, Any] | None, key: str = "value") -> float | None:
    if row is None or row.get("unavailable") or not row.get(key):
        return None
    return row[key]["median"]


def _goals(rows: list[dict[str, Any]]) -> list[str]:
    """The performance goals beside what this run measured (only figures that ran)."""
    out = []

    def add(goal: str, measured: float | None, shown: str, met: bool | None) -> None:
        verdict = "not measured" if measured is None else ("met" if met else "not met")
        out.append(f"| {goal} | {shown if measured is not None else 'n/a'} | {verdict} |")

    for case in ("TLS 1.3", "TLS 1.2"):
        ours = _median(_find(rows, "1", "fleetgate", case), "per_cpu_s")
        theirs = _median(_find(rows, "1", "mosquitto", case), "per_cpu_s")
        if _find(rows, "1", "fleetgate", case):
            r = ours / theirs if ours and theirs else None
            add(f"connects per server CPU-second >= 1.0x mosquitto ({case})", r,
                f"{r:.2f}x" if r else "", r is not None and r >= 1.0)
    storm = next((r["case"] for r in rows if r["figure"] == "1"
                  and r["case"].startswith("reconnect storm")), None)
    if storm and _find(rows, "1", "fleetgate", storm):
        ours = _median(_find(rows, "1", "fleetgate", storm))
        theirs = _median(_find(rows, "1", "mosquitto", storm))
        r = theirs / ours if ours and theirs else None
        add(f"{storm}: back >= 1.5x faster than mosquitto (wall clock, both resuming)", r,
            f"{r:.2f}x ({_num(ours)} s against {_num(theirs)} s)" if r else "",
            r is not None and r >= 1.5)
    if _find(rows, "3", "fleetgate"):
        v = _median(_find(rows, "3", "fleetgate"), "per_cpu_s")
        add("stored reports per server CPU-second >= 100,000", v, f"{_num(v)}",
            v is not None and v >= 100_000)
    if _find(rows, "4", "fleetgate"):
        row = _find(rows, "4", "fleetgate")
        lost = None if row is None or row.get("unavailable") else sum(
            r.get("lost", 0) for r in row["runs"])
        add("0 acknowledged messages lost under overload", lost, f"{lost} lost", lost == 0)
    mem = [r for r in rows if r["figure"] == "5" and r["system"] == "fleetgate"]
    if mem:
        v = _median(mem[-1])
        add(f"<= 40 KiB per idle connection ({mem[-1]['case']})", v, f"{_num(v)} KiB",
            v is not None and v <= 40)
    if _find(rows, "6", "fleet-ca"):
        v = _median(_find(rows, "6", "fleet-ca"))
        add(">= 3,000 bundles/s", v, f"{_num(v)}/s", v is not None and v >= 3000)
    if _find(rows, "7", "fleetgate"):
        v = _median(_find(rows, "7", "fleetgate"))
        add("revocation closes the live session <= 1 s", v, f"{_num(v)} s",
            v is not None and v <= 1.0)
    out += _cluster_goals(rows, add)
    if not out:
        return []
    return ["### Goals against this run", "", "| goal | measured (median) | |",
            "|---|---|---|", *out, ""]


def _cluster_goals(rows: list[dict[str, Any]], add: Any) -> list[str]:
    """Figure 8's goals (added through `add`; returns nothing itself)."""
    sqlite = _median(_find(rows, "8", "fleetgate, 1 node, SQLite"), "per_cpu_s")
    one = _median(_find(rows, "8", "fleetgate, 1 node, PostgreSQL"), "per_cpu_s")
    two = _find(rows, "8", "fleetgate, 2 nodes")
    if _find(rows, "8", "fleetgate, 1 node, PostgreSQL"):
        r = one / sqlite if one and sqlite else None
        add("PostgreSQL >= 0.7x SQLite, stored reports per server CPU-second", r,
            f"{r:.2f}x" if r else "", r is not None and r >= 0.7)
    if two is not None and two["case"].startswith("QoS"):
        v1 = _median(_find(rows, "8", "fleetgate, 1 node, PostgreSQL"))
        v2 = _median(two)
        r = v2 / v1 if v1 and v2 else None
        add("two nodes >= 1.6x one node, stored reports/s (where cores allow: a core each)",
            r, f"{r:.2f}x" if r else "", r is not None and r >= 1.6)
    failover = next((r for r in rows if r["figure"] == "8"
                     and r["case"].startswith("failover")), None)
    if failover is not None:
        v = _median(failover)
        lost = None if failover.get("unavailable") else sum(
            r.get("lost", 0) for r in failover["runs"])
        add("failover: every device back and reporting within 10 s, 0 acknowledged lost", v,
            f"{_num(v)} s, {lost} lost", v is not None and v <= 10 and lost == 0)
    return []


def render(doc: dict[str, Any], results_path: str) -> str:
    m = doc["machine"]
    lines = [
        HEADING,
        "",
        "fleetgate beside what a user would pick instead, measured in one run on one machine "
        "with one load generator (`bench/loadgen.py`: pipelined mTLS MQTT clients in separate "
        "processes, pre-encoded packets, acknowledgements read in bulk). Written by "
        "`make bench`; the raw runs are in "
        + (f"[{results_path}](../{results_path})." if not results_path.startswith("/")
           else f"{results_path}."),
        "",
        "Reproduce with `make bench` (every figure, 3 runs; about 35 minutes here) or "
        "`.venv/bin/python -m bench --only 6 1 --runs 5` for some figures; `--quick` is the "
        "smoke test's tiny run inside `make test`. The servers run on loopback with mTLS and "
        "certificates from `fleet-ca`: mosquitto (`require_certificate true`), amqtt "
        f"{AMQTT_VERSION} from PyPI in its own `.venv-bench/` (client certificates made "
        "required), and `fleet-gateway serve`. Figures 1 and 5 also measure `trio-floor` "
        "(`bench/trio_floor.py`), a bare trio mTLS server on fleetgate's own TLS context that "
        "answers CONNECT and does nothing else: what fleetgate costs above it is ours to cut, "
        "what it costs beyond mosquitto is the runtime's (Python, trio's TLS stream).",
        "",
        "### The machine and the run",
        "",
        f"- CPU: {m['cpu_model']}, {m['cores']} cores; {m['pinning']}",
        f"- Memory: {m['memory_gib']} GiB; kernel {m['kernel']}",
        f"- OpenSSL {m['openssl']}; Python {m['python']}; mosquitto {m['mosquitto']}; "
        f"amqtt {m['amqtt']}",
        f"- Certificates: {m['certificates']}",
        f"- Command: `{doc['command'].strip()}` (runs per figure: {doc['runs']}), "
        f"{doc['started']} to {doc['finished']}",
        f"- Load average before and after: {m['loadavg_before']} / {m['loadavg_after']}. "
        + m.get("shared_note", ""),
        "",
        "Every cell is the median of the runs with the minimum and maximum in brackets. "
        "\"Per CPU-second\" divides by the utime+stime the server's processes used during the "
        "measured window (/proc/<pid>/stat; for figure 6, the CA tool's own processes), so it "
        "depends neither on the load generator nor much on other work sharing the machine. "
        "\"ours ÷ theirs\" is fleetgate's (or fleet-ca's) median over the other system's. A "
        "system that cannot be measured yet says why instead of showing a number.",
        "",
    ]
    rows = doc["rows"]
    lines += _goals(rows)
    for fig in ORDER:
        frows = [r for r in rows if r["figure"] == fig]
        if not frows:
            continue
        lines += [f"### {fig}. {TITLES[fig]}", ""]
        for unit in dict.fromkeys(r["unit"] for r in frows):  # one table per unit
            urows = [r for r in frows if r["unit"] == unit]
            lines += _table(urows)
            shared = set.intersection(*(set(r.get("notes", [])) for r in urows))
            notes = [f"- {n}" for n in dict.fromkeys(
                n for r in urows for n in r.get("notes", [])) if n in shared]
            notes += [f"- {s}: {n}" for s, n in dict.fromkeys(
                (r["system"], n) for r in urows for n in r.get("notes", []) if n not in shared)]
            if notes:
                lines.append("")
                lines += notes
            lines.append("")
    lines += [f"Not measured in this run: {', '.join(doc['skipped'])}.", ""] if doc.get(
        "skipped") else []
    return "\n".join(lines).rstrip() + "\n"


def update_doc(doc_path: Path, section: str) -> None:
    """Replace (or append) the "## Side by side" section, leaving the rest of the file."""
    text = doc_path.read_text() if doc_path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == HEADING), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        tail = "".join(lines[end:])
        new = "".join(lines[:start]) + section + ("\n" + tail if tail else "")
    tmp = doc_path.with_name(doc_path.name + ".tmp")
    tmp.write_text(new)
    tmp.replace(doc_path)
