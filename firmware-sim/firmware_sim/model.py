"""The model a simulated device declares, and the plausible readings it reports.

The declaration is the protocol's `model` document (docs/protocol.md section 3). Readings are
a seeded random walk per number value, starting from a plausible point (21 for a
temperature, 45 for a humidity, else the middle of its range), kept in [min, max] and on
min + k x step, so the gateway stores every one. Strings report a short seeded text.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from .errors import ModelError

THERMOSTAT: dict[str, Any] = {"devices": [{
    "name": "thermostat", "description": "simulated by firmware-sim", "values": [
        {"name": "temperature", "permission": "r", "period": 1,
         "number": {"min": -40, "max": 125, "step": 0.1, "unit": "°C"}},
        {"name": "humidity", "permission": "r", "period": 1,
         "number": {"min": 0, "max": 100, "step": 0.1, "unit": "%"}},
        {"name": "setpoint", "permission": "rw",
         "number": {"min": 5, "max": 30, "step": 0.5, "unit": "°C"}},
    ]}]}

_PLAUSIBLE = {"temperature": 21.0, "humidity": 45.0}


@dataclass(frozen=True, slots=True)
class ValueSpec:
    """One declared value as the simulator needs it."""

    device: str
    name: str
    permission: str
    kind: str  # number | string | blob | xml
    spec: dict[str, Any]

    @property
    def topic(self) -> str:
        return f"{self.device}/{self.name}"

    @property
    def sensor(self) -> bool:
        """Reported on every tick (read-only values)."""
        return self.permission == "r"

    @property
    def reportable(self) -> bool:
        return "r" in self.permission

    def coerce(self, text: str) -> float | str:
        """A control command's data (always a string) as this value's reading.

        Raises:
            ValueError: not a number (for number values).
        """
        if self.kind != "number":
            return text
        x = float(text)
        if not math.isfinite(x):
            raise ValueError(f"{text!r} is not finite")
        return _fit(x, self.spec)


def load_model(path: Path | str | None) -> dict[str, Any]:
    """The declaration in `path` (JSON), or the default thermostat.

    Raises:
        ModelError: unreadable, not JSON, or without a `devices` list of named devices.
    """
    if path is None:
        return THERMOSTAT
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"model {path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"model {path}: not JSON: {exc}") from None
    try:
        values_of(doc)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"model {path}: not a declaration ({{\"devices\": [...]}}): "
                         f"missing or wrong {exc}") from None
    return doc


def values_of(model: dict[str, Any]) -> list[ValueSpec]:
    """Every value of a declaration, with its device name and type."""
    out = []
    for device in model["devices"]:
        for value in device.get("values", []):
            kind = next((k for k in ("number", "string", "blob", "xml") if k in value), "string")
            out.append(ValueSpec(device["name"], value["name"], value["permission"], kind,
                                 value.get(kind) or {}))
    return out


def _decimals(step: float | None) -> int:
    if not step:
        return 3
    return max(0, -Decimal(repr(float(step))).normalize().as_tuple().exponent)


def _fit(x: float, spec: dict[str, Any]) -> float:
    """`x` clamped to [min, max] and put on the step grid, with as few decimals as the
    declaration uses (so 21.3 is sent, not 21.299999999999997)."""
    lo, hi, step = float(spec["min"]), float(spec["max"]), spec.get("step")
    x = min(hi, max(lo, x))
    digits = max(_decimals(step), _decimals(lo))
    if not step:
        rounded = round(x, digits)
        return rounded if lo <= rounded <= hi else x
    k = round((x - lo) / step)
    for kk in (k, k - 1, k + 1):  # rounding may push a grid point just outside [lo, hi]
        v = round(lo + kk * step, digits)
        off = (v - lo) / step
        if lo <= v <= hi and abs(off - round(off)) <= 1e-9 * max(1.0, abs(off)):
            return v
    return lo


class Readings:
    """Seeded plausible readings for the values of one simulated device."""

    def __init__(self, values: list[ValueSpec], seed: int | str) -> None:
        self._rng = random.Random(f"firmware-sim:{seed}")
        self._now: dict[str, float | str] = {}
        for v in values:
            if v.kind == "number":
                lo, hi = float(v.spec["min"]), float(v.spec["max"])
                start = _PLAUSIBLE.get(v.name.lower(), (lo + hi) / 2)
                self._now[v.topic] = _fit(start + self._rng.uniform(-1, 1), v.spec)
            else:
                self._now[v.topic] = "<ok/>" if v.kind == "xml" else "ok"
        self._values = {v.topic: v for v in values}

    def current(self, value: ValueSpec) -> float | str:
        return self._now[value.topic]

    def set(self, value: ValueSpec, data: float | str) -> None:
        self._now[value.topic] = data

    def next(self, value: ValueSpec) -> float | str:
        """A new reading near the last one."""
        if value.kind == "number":
            lo, hi = float(value.spec["min"]), float(value.spec["max"])
            step = float(value.spec.get("step") or (hi - lo) / 1000)
            span = max(step, (hi - lo) / 400)
            x = float(self._now[value.topic]) + self._rng.gauss(0, span)
            self._now[value.topic] = _fit(x, value.spec)
        else:
            n = self._rng.randrange(10**6)
            if value.kind == "xml":
                self._now[value.topic] = f'<r v="{n}"/>'
            else:
                self._now[value.topic] = f"s{n}"[: int(value.spec.get("max") or 16)]
        return self._now[value.topic]
