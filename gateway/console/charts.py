"""Charts of a value's history: a time range from the query, min/max downsampling, SVG.

A chart never draws more than `2 x buckets` points, however many reports its range holds:
the range is cut into `buckets` equal spans of time and each span keeps its lowest and its
highest report (in time order), so a spike survives the reduction. The store is read for at
most `max_reports` reports of the range (the newest), so one chart's cost is bounded too.

The range comes from the query string: `range=1h|24h|7d|30d|all` (ending now), or
`from=` / `to=` as ISO 8601 times or Unix seconds (what the drag-to-zoom script sends).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .pages import e

RANGES = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7),
          "30d": timedelta(days=30), "all": None}


class BadRange(ValueError):
    """The query's time range is not one this page understands."""


@dataclass(frozen=True, slots=True)
class TimeRange:
    since: datetime | None
    until: datetime | None
    name: str  # a RANGES key, or "custom"

    def query(self) -> str:
        """The query string that selects this range again."""
        if self.name != "custom":
            return f"range={self.name}"
        parts = []
        if self.since is not None:
            parts.append(f"from={self.since.timestamp():.3f}")
        if self.until is not None:
            parts.append(f"to={self.until.timestamp():.3f}")
        return "&".join(parts)


def parse_range(query: Mapping[str, str], now: datetime) -> TimeRange:
    """The range a query asks for; `range=all` (no bound) when it names none.

    Raises:
        BadRange: an unknown range name, an unreadable time, or `from` after `to`.
    """
    if "from" in query or "to" in query:
        since = _time(query["from"]) if query.get("from") else None
        until = _time(query["to"]) if query.get("to") else None
        if since is not None and until is not None and since >= until:
            raise BadRange("the range's start is not before its end")
        return TimeRange(since, until, "custom")
    name = query.get("range", "all")
    if name not in RANGES:
        raise BadRange(f"unknown range {name!r}")
    span = RANGES[name]
    return TimeRange(None if span is None else now - span, None, name)


def _time(text: str) -> datetime:
    text = text.strip()[:40]
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BadRange(f"not a time: {text!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def downsample(points: Sequence[tuple[float, float]], buckets: int
               ) -> list[tuple[float, float]]:
    """At most `2 x buckets` of `points` ((seconds, value), oldest first): the lowest and
    the highest of each equal span of time, in time order."""
    if len(points) <= 2 * buckets:
        return list(points)
    t0, t1 = points[0][0], points[-1][0]
    width = (t1 - t0) / buckets or 1.0
    out: list[tuple[float, float]] = []
    lo = hi = points[0]
    current = 0
    for p in points:
        b = min(int((p[0] - t0) / width), buckets - 1)
        if b != current:
            out.extend(sorted({lo, hi}))
            lo = hi = p
            current = b
        elif p[1] < lo[1]:
            lo = p
        elif p[1] > hi[1]:
            hi = p
    out.extend(sorted({lo, hi}))
    return out


def svg(points: Sequence[tuple[float, float]], *, reports: int, width: int = 600,
        height: int = 120, standalone: bool = False) -> str:
    """A line chart as SVG (no script in it): `points` are (Unix seconds, value), oldest
    first. `data-from`/`data-to` carry the drawn span for the drag-to-zoom script."""
    if len(points) < 2:
        return ""
    t0, t1 = points[0][0], points[-1][0]
    lo, hi = min(p[1] for p in points), max(p[1] for p in points)
    span_t, span_v = (t1 - t0) or 1.0, (hi - lo) or 1.0
    coords = " ".join(f"{(t - t0) / span_t * width:.1f},{height - (v - lo) / span_v * height:.1f}"
                      for t, v in points)
    xmlns = ' xmlns="http://www.w3.org/2000/svg"' if standalone else ""
    first = datetime.fromtimestamp(t0, UTC).strftime("%Y-%m-%d %H:%M")
    last = datetime.fromtimestamp(t1, UTC).strftime("%Y-%m-%d %H:%M")
    return (f'<svg{xmlns} class="chart" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" data-from="{t0:.3f}" data-to="{t1:.3f}" '
            f'data-points="{len(points)}" data-reports="{reports}" '
            f'aria-label="history {e(first)} to {e(last)} UTC: {reports} reports, '
            f'{lo:g} to {hi:g}"><polyline fill="none" stroke="currentColor" '
            f'points="{coords}"/></svg>')


def range_picker(base: str, chosen: TimeRange) -> str:
    """Range links, a from/to form (GET) and the hint for drag-to-zoom."""
    links = " ".join(
        f'<a href="{e(base)}?range={name}"'
        + (' aria-current="true"' if chosen.name == name else "") + f">{name}</a>"
        for name in RANGES)
    since = _local(chosen.since)
    until = _local(chosen.until)
    return (f'<div class="ranges"><span>Time range:</span> {links}'
            f'<form method="get" action="{e(base)}" class="inline range-form">'
            f'<label>From <input type="datetime-local" name="from" step="1" '
            f'value="{since}"></label> <label>To <input type="datetime-local" name="to" '
            f'step="1" value="{until}"></label> <button type="submit">Show</button></form>'
            f'<small>(UTC; drag across a chart to zoom in)</small></div>')


def _local(when: datetime | None) -> str:
    return "" if when is None else when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
