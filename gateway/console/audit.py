"""The console's audit-trail page (operators only): the gateway's entries, newest first.

A page holds `PAGE` entries and one more, older, read only to check the link below the page.
Each entry shown is checked as `fleet-gateway audit verify` would check it (its hash, and
its prev_hash against the next older entry's hash), so an edited row is marked where it is
seen; the cost is the page's, never the trail's: the whole chain is verified by the CLI
(docs/operations.md, "The gateway's audit trail").
"""

from __future__ import annotations

from typing import Any

from ..storage.audit import AuditEntry, entry_hash
from .pages import e

PAGE = 100


def _intact(entry: AuditEntry, older: AuditEntry | None) -> bool:
    try:
        ok = entry_hash(entry.seq, entry.at, entry.actor, entry.action, entry.subject,
                        entry.details, entry.prev_hash) == entry.hash
    except TypeError:
        return False
    if older is not None:
        ok = ok and entry.prev_hash == older.hash and entry.seq == older.seq + 1
    return ok


def _before(query: dict[str, str]) -> int | None:
    text = query.get("before", "")
    return int(text) if text.isdigit() and 0 < len(text) < 19 else None


async def page(store: Any, query: dict[str, str]) -> tuple[str, str]:
    """(title, body HTML) of one page of the trail; `?before=SEQ` pages to older entries."""
    before = _before(query)
    found = await store.audit_newest(before=before, limit=PAGE + 1)
    shown, extra = found[:PAGE], (found[PAGE] if len(found) > PAGE else None)
    rows, broken = [], 0
    for i, entry in enumerate(shown):
        older = shown[i + 1] if i + 1 < len(shown) else extra
        ok = _intact(entry, older) and (older is not None or entry.seq != 1
                                        or entry.prev_hash == "0" * 64)
        broken += not ok
        rows.append(
            f'<tr class="{"" if ok else "broken"}"><td>{entry.seq}</td><td>{e(entry.at)}</td>'
            f'<td>{e(entry.actor)}</td><td>{e(entry.action)}</td><td>{e(entry.subject)}</td>'
            f'<td><code>{e(entry.details)}</code></td>'
            f'<td title="{e(entry.hash)}">{"ok" if ok else "BROKEN"}</td></tr>')
    one = broken == 1
    status = (f'<p class="error" role="alert">{broken} entr{"y" if one else "ies"} on this '
              f'page do{"es" if one else ""} not match the chain: run '
              f'<code>fleet-gateway audit verify</code></p>' if broken else "")
    more = (f'<p><a href="/console/audit?before={shown[-1].seq}" id="older">Older entries</a>'
            f'</p>' if extra is not None else "")
    table = ('<table id="audit"><thead><tr><th>#</th><th>time (UTC)</th><th>who</th>'
             '<th>action</th><th>subject</th><th>details</th><th>chain</th></tr></thead>'
             f'<tbody>{"".join(rows)}</tbody></table>' if rows else
             '<p>No entries yet: erasures, bar lifts, commands and account changes appear '
             'here.</p>')
    intro = ('<p>Every erasure, bar lift, control command and operator or owner change, '
             'hash-chained. This page checks the entries it shows; '
             '<code>fleet-gateway audit verify</code> checks the whole chain.</p>')
    return "Audit trail", intro + status + table + more
