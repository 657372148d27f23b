"""Result records: one row per (figure, case, system), with every run and its summary.

A row either holds runs or says why the system is not measured (``unavailable``), never a
made-up number. Rows are plain dicts so the JSON under bench/results/ is the record itself.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = "fleetgate-bench/1"


def summarise(values: list[float]) -> dict[str, float] | None:
    """Median, min and max of the runs (None when there are none)."""
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


@dataclass
class Row:
    """One system in one case of one figure."""

    figure: str
    case: str
    system: str
    unit: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    unavailable: str | None = None
    notes: list[str] = field(default_factory=list)
    # the run key that is summarised as the headline value, and the per-CPU-second key
    key: str = "value"
    cpu_key: str | None = "per_cpu_s"
    lower_is_better: bool = False
    verdict: str | None = None  # shown instead of a number when no run has one (figure 7)

    def add(self, **run: Any) -> None:
        self.runs.append(run)

    def as_dict(self) -> dict[str, Any]:
        values = [r[self.key] for r in self.runs if r.get(self.key) is not None]
        per_cpu = ([r[self.cpu_key] for r in self.runs if r.get(self.cpu_key) is not None]
                   if self.cpu_key else [])
        return {
            "figure": self.figure, "case": self.case, "system": self.system, "unit": self.unit,
            "value": summarise(values), "per_cpu_s": summarise(per_cpu),
            "lower_is_better": self.lower_is_better, "verdict": self.verdict,
            "unavailable": self.unavailable, "notes": self.notes, "runs": self.runs,
        }


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write atomically: a half-written result file would read as a finished run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def check_document(doc: dict[str, Any]) -> list[str]:
    """Everything wrong with a results document (empty when it is well formed)."""
    problems = []
    if doc.get("schema") != SCHEMA:
        problems.append(f"schema is {doc.get('schema')!r}")
    for key in ("machine", "command", "started", "finished", "rows"):
        if key not in doc:
            problems.append(f"missing {key}")
    for i, row in enumerate(doc.get("rows", [])):
        where = f"row {i} ({row.get('figure')}/{row.get('case')}/{row.get('system')})"
        for key in ("figure", "case", "system", "unit", "value", "runs"):
            if key not in row:
                problems.append(f"{where}: missing {key}")
        if row.get("unavailable"):
            continue
        if not row.get("runs"):
            problems.append(f"{where}: no runs and no reason")
            continue
        value = row.get("value")
        if value is None:
            if not row.get("verdict"):
                problems.append(f"{where}: runs without a value and no verdict")
            continue
        if not (value.get("min", 0) <= value.get("median", -1) <= value.get("max", -1)):
            problems.append(f"{where}: summary is not min <= median <= max")
    return problems
