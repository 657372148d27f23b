"""The fleet overview's filters: status, certificate expiring soon, text search, pages.

Filtering happens on the server. An operator's page reads the store's networks in UUID
order (keyset pages, as the API does) until `page_size` match or `scan_limit` networks have
been examined; either way a "more" link carries on after the last network examined, so one
request's cost is bounded however large the fleet. An owner's page filters the networks the
owner has claimed.

Search matches, case-insensitively, a part of the network's UUID or of its MQTT client id
(networks have no other name).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

EXPIRING = timedelta(days=30)  # "certificate expiring soon"
MAX_SEARCH = 64  # characters of a search kept


@dataclass(frozen=True, slots=True)
class Filter:
    status: str | None = None  # "online", "offline" or None (both)
    expiring: bool = False
    search: str = ""
    after: UUID | None = None  # the page starts after this network

    @classmethod
    def of(cls, query: Mapping[str, str]) -> Filter:
        """The filter a query asks for; what it cannot read is ignored (not filtered on)."""
        status = query.get("status")
        try:
            after = UUID(query["after"]) if query.get("after") else None
        except ValueError:
            after = None
        return cls(status if status in ("online", "offline") else None,
                   query.get("expiring") in ("1", "on", "true"),
                   query.get("q", "").strip()[:MAX_SEARCH].lower(), after)

    @property
    def active(self) -> bool:
        return self.status is not None or self.expiring or bool(self.search)

    def matches(self, doc: dict[str, Any], now: datetime) -> bool:
        if self.status is not None and doc.get("status") != self.status:
            return False
        if self.expiring:
            ends = doc.get("cert_not_after")
            if not ends or datetime.fromisoformat(ends.replace("Z", "+00:00")) > now + EXPIRING:
                return False
        if self.search:
            text = f'{doc.get("uuid", "")} {doc.get("client_id") or ""}'.lower()
            if self.search not in text:
                return False
        return True

    def query(self, *, after: str | None = None) -> str:
        """This filter as a query string, starting after `after` when given."""
        q = {k: v for k, v in (("status", self.status or ""),
                               ("expiring", "1" if self.expiring else ""),
                               ("q", self.search), ("after", after or "")) if v}
        return urlencode(q)


@dataclass(frozen=True, slots=True)
class Page:
    networks: list[dict[str, Any]]
    next_after: str | None  # where the next page starts, or None (no more)
    examined: int


async def operator_page(read: Callable[[int, UUID | None], Awaitable[list[dict[str, Any]]]],
                        flt: Filter, now: datetime, *, page_size: int, scan_limit: int
                        ) -> Page:
    """One page of the whole fleet. `read(limit, after)` returns status documents (with
    `cert_not_after`) of up to `limit` networks after `after`, in UUID order."""
    found: list[dict[str, Any]] = []
    examined = 0
    after = flt.after
    chunk = page_size if not flt.active else max(page_size, 200)
    while True:
        want = min(chunk, scan_limit - examined)
        batch = await read(want + 1, after)  # one more: is there anything past `want`?
        for doc in batch:
            if len(found) == page_size or examined == scan_limit:
                return Page(found, str(after), examined)  # stopped with networks left
            examined += 1
            after = UUID(doc["uuid"])
            if flt.matches(doc, now):
                found.append(doc)
        if len(batch) <= want:
            return Page(found, None, examined)  # the store had no more


def owner_page(docs: list[dict[str, Any]], flt: Filter, now: datetime, *, page_size: int
               ) -> Page:
    """One page of an owner's own networks (`docs` in UUID order)."""
    start = [d for d in docs if flt.after is None or d["uuid"] > str(flt.after)]
    found: list[dict[str, Any]] = []
    for i, doc in enumerate(start):
        if flt.matches(doc, now):
            if len(found) == page_size:
                return Page(found, start[i - 1]["uuid"], i)
            found.append(doc)
    return Page(found, None, len(start))
