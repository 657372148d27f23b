"""`model` declarations: what a device says it is, parsed and validated (docs/protocol.md).

A declaration is a JSON object `{"devices": [device, ...]}`; a device is
`{"name", "description"?, "values": [value, ...]}`; a value is `{"name", "permission",
"description"?, "period"?}` plus exactly one type key:

- `"number": {"min", "max", "step"?, "unit"?}` (min <= max, step > 0),
- `"string": {"max"}` (characters), `"blob": {"max"}` (bytes), `"xml": {"max"?}` (bytes).

`parse_model` collects every reason a declaration is wrong (up to `Limits.max_reasons`), not
just the first, so a firmware author fixes them in one round. Declaring is additive: nodes not
named stay as they are (their history is kept); named ones are created or updated in place.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .errors import DeclarationRejected
from .limits import DEFAULT_LIMITS, Limits


class Permission(StrEnum):
    """Who writes a value: the device reports (r), the operator controls (w), or both."""

    R = "r"
    W = "w"
    RW = "rw"

    @property
    def reportable(self) -> bool:
        return self is not Permission.W

    @property
    def controllable(self) -> bool:
        return self is not Permission.R


@dataclass(frozen=True, slots=True)
class NumberType:
    min: float
    max: float
    step: float | None = None
    unit: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"min": self.min, "max": self.max}
        if self.step is not None:
            out["step"] = self.step
        if self.unit is not None:
            out["unit"] = self.unit
        return {"number": out}


@dataclass(frozen=True, slots=True)
class StringType:
    max: int  # characters

    def to_json(self) -> dict[str, Any]:
        return {"string": {"max": self.max}}


@dataclass(frozen=True, slots=True)
class BlobType:
    max: int  # bytes of the (base64 or other text) encoding the device sends

    def to_json(self) -> dict[str, Any]:
        return {"blob": {"max": self.max}}


@dataclass(frozen=True, slots=True)
class XmlType:
    max: int  # bytes

    def to_json(self) -> dict[str, Any]:
        return {"xml": {"max": self.max}}


ValueType = NumberType | StringType | BlobType | XmlType
TYPE_KEYS = ("number", "string", "blob", "xml")


@dataclass(frozen=True, slots=True)
class ValueDecl:
    name: str
    type: ValueType
    permission: Permission
    description: str | None = None
    period: float | None = None  # seconds between reports the device intends; informational

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "permission": str(self.permission)}
        out.update(self.type.to_json())
        if self.description is not None:
            out["description"] = self.description
        if self.period is not None:
            out["period"] = self.period
        return out


@dataclass(frozen=True, slots=True)
class DeviceDecl:
    name: str
    values: tuple[ValueDecl, ...]
    description: str | None = None


@dataclass(frozen=True, slots=True)
class ModelDecl:
    devices: tuple[DeviceDecl, ...]

    @property
    def value_count(self) -> int:
        return sum(len(d.values) for d in self.devices)


class _Reasons:
    """Collects reasons up to a cap; `full` tells the parser to stop looking."""

    def __init__(self, cap: int) -> None:
        self.items: list[str] = []
        self.cap = cap
        self.truncated = False

    def add(self, reason: str) -> None:
        if len(self.items) < self.cap:
            self.items.append(reason)
        else:
            self.truncated = True

    @property
    def full(self) -> bool:
        return len(self.items) >= self.cap


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def load_json(payload: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity. Raises ValueError on anything else.

    RecursionError (deep nesting) and oversized integers surface as ValueError too, so a
    peer's bytes can only ever produce a validation error.
    """
    try:
        text = payload.decode("utf-8")
        return json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise ValueError("payload is not UTF-8") from exc
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at offset {exc.pos}") from exc


def _valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, which JSON escapes can carry
        return False
    return True


def check_name(name: object, limits: Limits) -> str | None:
    """Return why `name` is not a valid device or value name, or None if it is."""
    if not isinstance(name, str):
        return "must be a string"
    if not name:
        return "must not be empty"
    if len(name) > limits.max_name_length:
        return f"longer than {limits.max_name_length} characters"
    if name.startswith("$"):
        return "must not start with '$'"
    if not _valid_unicode(name):
        return "must be valid Unicode"
    for ch in name:
        if ch in "/+#" or ord(ch) < 0x20 or ch == "\x7f":
            return f"must not contain {ch!r} (no '/', '+', '#' or control characters)"
    return None


def _finite_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _optional_text(obj: dict, key: str, path: str, cap: int, reasons: _Reasons) -> str | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        reasons.add(f"{path}.{key}: must be a string")
        return None
    if len(v) > cap:
        reasons.add(f"{path}.{key}: longer than {cap} characters")
        return None
    if not _valid_unicode(v):
        reasons.add(f"{path}.{key}: not valid Unicode")
        return None
    if "\x00" in v:  # no database text column holds it (PostgreSQL refuses it)
        reasons.add(f"{path}.{key}: must not contain U+0000")
        return None
    return v


def _max_size(spec: dict, path: str, cap: int, reasons: _Reasons, *, default: int | None):
    m = spec.get("max", default)
    if m is None:
        reasons.add(f"{path}.max: required")
        return None
    if not isinstance(m, int) or isinstance(m, bool) or m < 1 or m > cap:
        reasons.add(f"{path}.max: must be an integer from 1 to {cap}")
        return None
    return m


def _parse_type(value: dict, path: str, limits: Limits, reasons: _Reasons) -> ValueType | None:
    present = [k for k in TYPE_KEYS if k in value]
    if len(present) != 1:
        reasons.add(f"{path}: needs exactly one of {', '.join(TYPE_KEYS)} (found {len(present)})")
        return None
    key = present[0]
    spec = value[key]
    tpath = f"{path}.{key}"
    if spec is None and key == "xml":
        spec = {}
    if not isinstance(spec, dict):
        reasons.add(f"{tpath}: must be an object")
        return None
    unknown = sorted(set(spec) - {"number": {"min", "max", "step", "unit"}}.get(key, {"max"}))
    if unknown:
        reasons.add(f"{tpath}: unknown field(s) {', '.join(map(repr, unknown[:5]))}")
    if key == "number":
        lo, hi, step = spec.get("min"), spec.get("max"), spec.get("step")
        ok = True
        for k, v in (("min", lo), ("max", hi)):
            if not _finite_number(v):
                reasons.add(f"{tpath}.{k}: required, a finite number")
                ok = False
        if step is not None and (not _finite_number(step) or step <= 0):
            reasons.add(f"{tpath}.step: must be a number > 0")
            ok = False
        if ok and lo > hi:
            reasons.add(f"{tpath}: min ({lo}) is greater than max ({hi})")
            ok = False
        unit = _optional_text(spec, "unit", tpath, limits.max_unit_length, reasons)
        if not ok:
            return None
        return NumberType(min=lo, max=hi, step=step, unit=unit)
    if key == "string":
        m = _max_size(spec, tpath, limits.max_string_length, reasons, default=None)
        return StringType(max=m) if m is not None else None
    if key == "blob":
        m = _max_size(spec, tpath, limits.max_blob_bytes, reasons, default=None)
        return BlobType(max=m) if m is not None else None
    m = _max_size(spec, tpath, limits.max_xml_bytes, reasons, default=limits.max_xml_bytes)
    return XmlType(max=m) if m is not None else None


_VALUE_KEYS = {"name", "permission", "description", "period", *TYPE_KEYS}


def _parse_value(value: object, path: str, limits: Limits, reasons: _Reasons) -> ValueDecl | None:
    if not isinstance(value, dict):
        reasons.add(f"{path}: must be an object")
        return None
    ok = True
    why = check_name(value.get("name"), limits)
    if why:
        reasons.add(f"{path}.name: {why}")
        ok = False
    unknown = sorted(set(value) - _VALUE_KEYS)
    if unknown:
        reasons.add(f"{path}: unknown field(s) {', '.join(map(repr, unknown[:5]))}")
        ok = False
    perm = value.get("permission")
    try:
        permission = Permission(perm) if isinstance(perm, str) else None
    except ValueError:
        permission = None
    if permission is None:
        reasons.add(f"{path}.permission: must be one of 'r', 'w', 'rw'")
        ok = False
    vtype = _parse_type(value, path, limits, reasons)
    description = _optional_text(value, "description", path, limits.max_description_length,
                                 reasons)
    period = value.get("period")
    if period is not None and (not _finite_number(period) or period <= 0):
        reasons.add(f"{path}.period: must be a number of seconds > 0")
        ok = False
    if not ok or vtype is None or permission is None:
        return None
    return ValueDecl(name=value["name"], type=vtype, permission=permission,
                     description=description, period=period)


def parse_model(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> ModelDecl:
    """Parse and validate a `model` payload.

    Returns the declaration; raises `DeclarationRejected` with every reason found (capped).
    Network-wide caps that depend on what is already stored are checked by the store.
    """
    if len(payload) > limits.max_model_bytes:
        raise DeclarationRejected([f"model is {len(payload)} bytes; the limit is "
                                   f"{limits.max_model_bytes}"])
    try:
        doc = load_json(payload)
    except ValueError as exc:
        raise DeclarationRejected([str(exc)]) from None
    reasons = _Reasons(limits.max_reasons)
    if not isinstance(doc, dict) or not isinstance(doc.get("devices"), list):
        raise DeclarationRejected(['model must be an object {"devices": [...]}'])
    unknown = sorted(set(doc) - {"devices"})
    if unknown:
        reasons.add(f"unknown field(s) {', '.join(map(repr, unknown[:5]))}")
    raw_devices = doc["devices"]
    if len(raw_devices) > limits.max_devices_per_network:
        raise DeclarationRejected([f"{len(raw_devices)} devices; the limit is "
                                   f"{limits.max_devices_per_network} per network"])
    total = sum(len(d["values"]) for d in raw_devices
                if isinstance(d, dict) and isinstance(d.get("values"), list))
    if total > limits.max_values_per_network:
        raise DeclarationRejected([f"{total} values; the limit is "
                                   f"{limits.max_values_per_network} per network"])
    devices: list[DeviceDecl] = []
    seen_devices: set[str] = set()
    for i, dev in enumerate(raw_devices):
        if reasons.full:
            break
        path = f"devices[{i}]"
        if not isinstance(dev, dict):
            reasons.add(f"{path}: must be an object")
            continue
        ok = True
        name = dev.get("name")
        why = check_name(name, limits)
        if why:
            reasons.add(f"{path}.name: {why}")
            ok = False
        elif name in seen_devices:
            reasons.add(f"{path}.name: device {name!r} declared twice")
            ok = False
        else:
            seen_devices.add(name)
        unknown = sorted(set(dev) - {"name", "description", "values"})
        if unknown:
            reasons.add(f"{path}: unknown field(s) {', '.join(map(repr, unknown[:5]))}")
            ok = False
        description = _optional_text(dev, "description", path, limits.max_description_length,
                                     reasons)
        raw_values = dev.get("values", [])
        if not isinstance(raw_values, list):
            reasons.add(f"{path}.values: must be a list")
            continue
        if len(raw_values) > limits.max_values_per_device:
            reasons.add(f"{path}.values: {len(raw_values)} values; the limit is "
                        f"{limits.max_values_per_device} per device")
            continue
        values: list[ValueDecl] = []
        seen_values: set[str] = set()
        for j, raw in enumerate(raw_values):
            if reasons.full:
                break
            vpath = f"{path}.values[{j}]"
            v = _parse_value(raw, vpath, limits, reasons)
            if v is None:
                ok = False
            elif v.name in seen_values:
                reasons.add(f"{vpath}.name: value {v.name!r} declared twice in this device")
                ok = False
            else:
                seen_values.add(v.name)
                values.append(v)
        if ok:
            devices.append(DeviceDecl(name=name, values=tuple(values), description=description))
    if reasons.items:
        items = list(reasons.items)
        if reasons.truncated or reasons.full:
            items.append(f"(stopped after {limits.max_reasons} reasons)")
        raise DeclarationRejected(items)
    return ModelDecl(devices=tuple(devices))


def value_decl_from_json(doc: dict) -> ValueDecl:
    """Rebuild a `ValueDecl` from its `to_json()` form, as a store kept it.

    Trusts its input (it was validated when declared): limits tightened since then must not
    make stored values unreadable.
    """
    if "number" in doc:
        n = doc["number"]
        vtype: ValueType = NumberType(min=n["min"], max=n["max"], step=n.get("step"),
                                      unit=n.get("unit"))
    elif "string" in doc:
        vtype = StringType(max=doc["string"]["max"])
    elif "blob" in doc:
        vtype = BlobType(max=doc["blob"]["max"])
    else:
        vtype = XmlType(max=doc["xml"]["max"])
    return ValueDecl(name=doc["name"], type=vtype, permission=Permission(doc["permission"]),
                     description=doc.get("description"), period=doc.get("period"))
