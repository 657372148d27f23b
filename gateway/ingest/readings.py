"""Readings: the payloads of `report/...` topics, parsed and checked against a declaration.

Three payload shapes (docs/protocol.md, "Reports"):

- plain text: the whole payload is the data (`21.5`, `on`, `<a/>`), timestamped on receipt;
- one reading: `{"data": <string or number>, "timestamp": "<RFC 3339>"?}`;
- a batch: `{"reports": [reading, ...]}` (devices that buffered while offline).

A payload whose first non-blank byte is `{` is JSON and must have one of the two JSON shapes;
a string value whose text starts with `{` is sent in the `{"data": ...}` form.

`parse_readings` checks the shape only; `check_data` checks one datum against a `ValueDecl`
(type, range, step, size, well-formed XML) and returns the text to store. Each raises
`ReadingRejected` with a stable code; a batch is judged reading by reading, so one bad reading
does not cost the good ones.
"""

from __future__ import annotations

import math
import re
import xml.parsers.expat
from dataclasses import dataclass
from datetime import UTC, datetime

from ..model.declarations import BlobType, NumberType, StringType, ValueDecl, XmlType, load_json
from ..model.limits import DEFAULT_LIMITS, Limits
from .errors import ReadingRejected, RejectCode

Data = str | int | float


@dataclass(frozen=True, slots=True)
class Reading:
    """One reading as the device sent it: `data` not yet checked against the declaration."""

    data: Data
    timestamp: datetime | None  # UTC-aware; None means "use the receive time"


_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})\Z"
)
_NUMBER_TEXT = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\Z")


def parse_timestamp(text: object) -> datetime:
    """Parse an RFC 3339 date-time with an offset into a UTC-aware datetime."""
    if not isinstance(text, str):
        raise ReadingRejected(RejectCode.MALFORMED, "timestamp must be an RFC 3339 string")
    m = _RFC3339.match(text)
    if m is None:
        raise ReadingRejected(RejectCode.MALFORMED,
                              f"timestamp {text[:40]!r} is not RFC 3339 with an offset")
    date, clock, frac, offset = m.groups()
    frac = (frac or "0")[:6].ljust(6, "0")  # microseconds: what datetime holds
    offset = "+00:00" if offset in "Zz" else offset
    try:
        return datetime.fromisoformat(f"{date}T{clock}.{frac}{offset}").astimezone(UTC)
    except (ValueError, OverflowError):
        raise ReadingRejected(RejectCode.MALFORMED,
                              f"timestamp {text[:40]!r} is not a valid date-time") from None


def _reading_from_json(obj: object) -> Reading:
    if not isinstance(obj, dict) or "data" not in obj:
        raise ReadingRejected(RejectCode.MALFORMED, 'a reading is {"data": ..., "timestamp": ...}')
    extra = set(obj) - {"data", "timestamp"}
    if extra:
        raise ReadingRejected(RejectCode.MALFORMED,
                              f"unknown field(s) in reading: {', '.join(sorted(extra)[:5])}")
    data = obj["data"]
    if isinstance(data, bool) or not isinstance(data, str | int | float):
        raise ReadingRejected(RejectCode.TYPE, "data must be a string or a number")
    ts = obj.get("timestamp")
    return Reading(data=data, timestamp=None if ts is None else parse_timestamp(ts))


@dataclass(frozen=True, slots=True)
class ParsedReport:
    """A report payload split into readings; a malformed batch item is its ReadingRejected."""

    readings: tuple[Reading | ReadingRejected, ...]
    batch: bool  # the payload was {"reports": [...]}: errors name the item's index


def parse_readings(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> ParsedReport:
    """Split a report payload into readings.

    Raises `ReadingRejected` when the payload as a whole is unusable.
    """
    if len(payload) > limits.max_report_bytes:
        raise ReadingRejected(RejectCode.TOO_LARGE,
                              f"payload is {len(payload)} bytes; the limit is "
                              f"{limits.max_report_bytes}")
    first = payload[:1]
    if first.isspace():
        first = payload.lstrip()[:1]
    if first != b"{":
        try:
            return ParsedReport((Reading(data=payload.decode("utf-8"), timestamp=None),), False)
        except UnicodeDecodeError:
            raise ReadingRejected(RejectCode.MALFORMED, "payload is not UTF-8") from None
    try:
        doc = load_json(payload)
    except ValueError as exc:
        raise ReadingRejected(RejectCode.MALFORMED, str(exc)) from None
    if isinstance(doc, dict) and "reports" in doc:
        items = doc["reports"]
        if set(doc) != {"reports"} or not isinstance(items, list):
            raise ReadingRejected(RejectCode.MALFORMED, 'a batch is {"reports": [reading, ...]}')
        if len(items) > limits.max_batch_readings:
            raise ReadingRejected(RejectCode.TOO_LARGE,
                                  f"batch of {len(items)} readings; the limit is "
                                  f"{limits.max_batch_readings}")
        out: list[Reading | ReadingRejected] = []
        for item in items:
            try:
                out.append(_reading_from_json(item))
            except ReadingRejected as exc:
                out.append(exc)
        return ParsedReport(tuple(out), True)
    return ParsedReport((_reading_from_json(doc),), False)


class _NoDTD(Exception):
    pass


def _refuse_dtd(*_args: object) -> None:
    raise _NoDTD


def _check_xml(text: str) -> None:
    # expat, not ElementTree: we only need well-formedness, and refusing any DTD up front
    # shuts out entity-expansion bombs whatever the expat version.
    parser = xml.parsers.expat.ParserCreate()
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_dtd
    try:
        parser.Parse(text, True)
    except _NoDTD:
        raise ReadingRejected(RejectCode.XML, "XML with a DTD is not accepted") from None
    except (xml.parsers.expat.ExpatError, ValueError, RecursionError) as exc:
        raise ReadingRejected(RejectCode.XML, f"not well-formed XML: {exc}") from None


def _number(data: Data) -> tuple[float, str]:
    if isinstance(data, str):
        text = data.strip()
        if not _NUMBER_TEXT.match(text):
            raise ReadingRejected(RejectCode.TYPE, f"{data[:40]!r} is not a number")
    else:
        text = str(data) if isinstance(data, int) else repr(data)
    try:
        x = float(text)
    except (ValueError, OverflowError):
        raise ReadingRejected(RejectCode.TYPE, f"{text[:40]!r} is not a number") from None
    if not math.isfinite(x):
        raise ReadingRejected(RejectCode.RANGE, f"{text[:40]} is not a finite number")
    return x, text


def check_data(decl: ValueDecl, data: Data) -> str:
    """Check one datum against its value's type; return the text to store.

    Raises `ReadingRejected` (TYPE, RANGE, STEP, SIZE, XML). Permission is the caller's check:
    the same function validates reports and control commands.
    """
    t = decl.type
    if isinstance(t, NumberType):
        x, text = _number(data)
        if x < t.min or x > t.max:
            raise ReadingRejected(RejectCode.RANGE, f"{text[:40]} is outside [{t.min}, {t.max}]")
        if t.step is not None:
            k = (x - t.min) / t.step
            if abs(k - round(k)) > 1e-9 * max(1.0, abs(k)):
                raise ReadingRejected(RejectCode.STEP,
                                      f"{text[:40]} is not min {t.min} + a multiple of {t.step}")
        return text
    if not isinstance(data, str):
        raise ReadingRejected(RejectCode.TYPE, f"a {type(t).__name__[:-4].lower()} value "
                                               "takes a string, not a number")
    try:
        size = len(data.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates from a JSON "\ud800" escape
        raise ReadingRejected(RejectCode.MALFORMED, "string is not valid Unicode") from None
    if "\x00" in data:  # stored as text: PostgreSQL's text holds no U+0000
        raise ReadingRejected(RejectCode.MALFORMED, "string contains U+0000")
    if isinstance(t, StringType):
        if len(data) > t.max:
            raise ReadingRejected(RejectCode.SIZE,
                                  f"string of {len(data)} characters; the maximum is {t.max}")
        return data
    if isinstance(t, BlobType):
        if size > t.max:
            raise ReadingRejected(RejectCode.SIZE, f"blob of {size} bytes; the maximum is {t.max}")
        return data
    assert isinstance(t, XmlType)
    if size > t.max:
        raise ReadingRejected(RejectCode.SIZE, f"XML of {size} bytes; the maximum is {t.max}")
    _check_xml(data)
    return data
