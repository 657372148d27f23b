"""The overview's activity figures: reports per minute and refused connections per minute.

They come from the gateway's `Activity` counts (gateway/activity.py), kept as reports are
accepted and connections refused, so reading them costs the same whatever the fleet's
history. Operators see the fleet's figures; an owner sees the reports of their own networks
(the fleet's figures would tell them about other people's devices). Each network row carries
its reports per minute. Refused connections are the fleet's only (gateway/activity.py: a
refused peer has proven no network), so only operators see them.
"""

from __future__ import annotations

from html import escape as e
from typing import Any
from uuid import UUID


def annotate(activity: Any, docs: list[dict[str, Any]]) -> None:
    """Add each network's figures to its status document (`activity`)."""
    if activity is None:
        return
    for doc in docs:
        doc["activity"] = {"reports_per_minute": round(
            activity.network(UUID(doc["uuid"])).reports, 1)}


async def overall(console: Any, who: Any, *, hour: bool = False) -> dict[str, Any] | None:
    """The figures at the top of `who`'s overview (None without activity counts); with
    `hour`, an operator's also carry the fleet's reports of each of the last 60 minutes."""
    activity = console.activity
    if activity is None:
        return None
    if who.account.role == "operator":
        got: dict[str, Any] = activity.fleet().json()
        if hour:
            got["hour"] = activity.history()["reports"]
        return got
    owned = await console.call(console.accounts.networks_of, who.account.id)
    return activity.networks(UUID(n) for n in owned).json()


def summary(figures: dict[str, float] | None, operator: bool) -> str:
    """The figures' paragraph (the script updates its spans from the live stream)."""
    if figures is None:
        return ""
    reports = (f'<span id="reports-per-minute">{e(_shown(figures["reports_per_minute"]))}'
               f'</span> reports per minute')
    if not operator:
        return f'<p id="activity">Your networks, in the last minute: {reports}.</p>'
    return (f'<p id="activity">The fleet, in the last minute: {reports}, '
            f'<span id="refused-per-minute">{e(_shown(figures["refused_per_minute"]))}'
            f'</span> refused connections per minute.{_hour(figures.get("hour"))}</p>')


def _hour(counts: list[int] | None) -> str:
    """Reports of each of the last 60 minutes as small SVG bars (oldest on the left)."""
    if not counts or not any(counts):
        return ""  # nothing in the last hour: the figures say so already
    top = max(counts)
    bars = "".join(f'<rect x="{i}" y="{20 - 20 * n / top:.2f}" width="0.8" '
                   f'height="{20 * n / top:.2f}"/>' for i, n in enumerate(counts) if n)
    return (f' <svg class="hour" viewBox="0 0 {len(counts)} 20" preserveAspectRatio="none" '
            f'role="img" aria-label="reports per minute over the last hour, at most {top}">'
            f'<title>reports per minute, last hour (at most {top})</title>{bars}</svg>')


def cells(doc: dict[str, Any]) -> str:
    """A network row's figure cell."""
    got = doc.get("activity") or {}
    return f'<td class="reports-per-minute">{e(_shown(got.get("reports_per_minute", 0)))}</td>'


def _shown(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"
