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


async def overall(console: Any, who: Any) -> dict[str, float] | None:
    """The figures at the top of `who`'s overview (None without activity counts)."""
    activity = console.activity
    if activity is None:
        return None
    if who.account.role == "operator":
        return activity.fleet().json()
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
            f'</span> refused connections per minute.</p>')


def cells(doc: dict[str, Any]) -> str:
    """A network row's figure cell."""
    got = doc.get("activity") or {}
    return f'<td class="reports-per-minute">{e(_shown(got.get("reports_per_minute", 0)))}</td>'


def _shown(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"
