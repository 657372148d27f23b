"""The console's HTML: one layout and one function per page. Every text that comes from a
person or a device goes through `e` (html.escape), so script in any field is shown, inert."""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any


def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def layout(title: str, body: str, *, who: str | None = None, csrf: str = "",
           operator: bool = False) -> bytes:
    nav = ""
    if who is not None:
        extra = '<a href="/console/accounts">Accounts</a> ' if operator else ""
        nav = (f'<nav><a href="/console/">Fleet</a> <a href="/console/account">Account</a> '
               f'{extra}'
               f'<span class="who">{e(who)}</span>'
               f'<form method="post" action="/console/logout" class="inline">'
               f'<input type="hidden" name="csrf" value="{e(csrf)}">'
               f'<button type="submit">Log out</button></form></nav>')
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{e(title)} - fleetgate</title>'
            f'<link rel="stylesheet" href="/console/static/console.css">'
            f'<script src="/console/static/console.js" defer></script></head>'
            f'<body>{nav}<main><h1>{e(title)}</h1>{body}</main></body></html>').encode()


def login(token: str, message: str = "") -> bytes:
    note = f'<p class="error" role="alert">{e(message)}</p>' if message else ""
    return layout("Log in", f"""{note}
<form method="post" action="/console/login" id="login">
<input type="hidden" name="csrf" value="{e(token)}">
<label>Email <input type="email" name="email" autocomplete="username" required></label>
<label>Password <input type="password" name="password" autocomplete="current-password"
 required></label>
<button type="submit">Log in</button></form>""")


def overview(networks: list[dict[str, Any]], csrf: str, role: str) -> str:
    rows = "".join(
        f'<tr data-network="{e(n["uuid"])}"><td><a href="/console/networks/{e(n["uuid"])}">'
        f'{e(n["uuid"])}</a></td><td class="status {e(n["status"])}">{e(n["status"])}</td>'
        f'<td>{e(n.get("last_seen") or "never")}</td>'
        f'<td>{e(n.get("cert_not_after") or "unknown")}</td></tr>' for n in networks)
    online = sum(1 for n in networks if n["status"] == "online")
    claim = "" if role == "operator" else f"""
<h2>Add a network</h2>
<form method="post" action="/console/claim">
<input type="hidden" name="csrf" value="{e(csrf)}">
<label>Owner code (from device.json) <input name="code" required maxlength="64"
 autocomplete="off"></label> <button type="submit">Own this network</button></form>"""
    return f"""<p id="summary">{len(networks)} networks: <span id="online">{online}</span> online,
<span id="offline">{len(networks) - online}</span> offline</p>
<table id="networks"><thead><tr><th>Network</th><th>Status</th><th>Last seen</th>
<th>Certificate expires</th></tr></thead><tbody>{rows}</tbody></table>{claim}"""


def network(doc: dict[str, Any], charts: dict[str, str], csrf: str) -> str:
    status = doc.get("status") or {}
    parts = [f'<p>Network <code id="network-uuid">{e(doc["uuid"])}</code>: '
             f'<span class="status {e(status.get("status"))}">{e(status.get("status"))}</span>'
             f', last seen {e(status.get("last_seen") or "never")}</p>']
    for device in doc.get("devices", []):
        parts.append(f'<section class="device"><h2>{e(device.get("name"))} '
                     f'<code>{e(device.get("uuid"))}</code></h2><table><thead><tr>'
                     f'<th>Value</th><th>UUID</th><th>Latest</th><th>Control</th></tr></thead>'
                     f'<tbody>')
        for value in device.get("values", []):
            latest, control = "", ""
            for state in value.get("states", []):
                got = state.get("latest")
                if state.get("type") == "Report" and got is not None:
                    latest = f'{e(got["data"])} <small>{e(got["timestamp"])}</small>'
                if state.get("type") == "Control":
                    control = (f'<form method="post" action="/console/values/'
                               f'{e(value["uuid"])}/control"><input type="hidden" name="csrf"'
                               f' value="{e(csrf)}"><input name="data" required>'
                               f'<button type="submit">Send</button></form>')
            parts.append(f'<tr><td>{e(value.get("name"))}</td><td><code>{e(value["uuid"])}'
                         f'</code></td><td>{latest}</td><td>{control}</td></tr>')
            if value["uuid"] in charts:
                parts.append(f'<tr><td colspan="4">{charts[value["uuid"]]}</td></tr>')
        parts.append("</tbody></table></section>")
    parts.append(f"""<h2>Erase this network</h2>
<p>Erasing deletes everything stored about this network at once and bars its certificate.
Type the network's UUID to confirm.</p>
<form method="post" action="/console/networks/{e(doc["uuid"])}/erase">
<input type="hidden" name="csrf" value="{e(csrf)}">
<input name="confirm" required autocomplete="off"><button type="submit">Erase</button></form>""")
    return "".join(parts)


def chart(points: list[tuple[datetime, float]], width: int = 600, height: int = 120) -> str:
    """A line chart as plain SVG (no script): `points` oldest first."""
    if len(points) < 2:
        return ""
    t0, t1 = points[0][0].timestamp(), points[-1][0].timestamp()
    lo, hi = min(p[1] for p in points), max(p[1] for p in points)
    span_t, span_v = (t1 - t0) or 1.0, (hi - lo) or 1.0
    coords = " ".join(f"{(p[0].timestamp() - t0) / span_t * width:.1f},"
                      f"{height - (p[1] - lo) / span_v * height:.1f}" for p in points)
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="history: {len(points)} reports, '
            f'{lo:g} to {hi:g}"><polyline fill="none" stroke="currentColor" '
            f'points="{coords}"/></svg>')


def account(me: dict[str, Any], sessions: list[Any], current: str, csrf: str) -> str:
    details = me.get("details", {})
    rows = "".join(
        f'<tr><td>{e(s.address)}</td><td>{e(s.created)}</td><td>{e(s.seen)}</td><td>'
        + ("this session" if s.id == current else
           f'<form method="post" action="/console/account/sessions/{e(s.id)}/revoke">'
           f'<input type="hidden" name="csrf" value="{e(csrf)}">'
           f'<button type="submit">End</button></form>') + "</td></tr>" for s in sessions)
    fields = "".join(
        f'<label>{e(name.title())} <input name="{name}" value="{e(details.get(name, ""))}" '
        f'maxlength="500"></label>' for name in ("name", "phone", "address"))
    hidden = f'<input type="hidden" name="csrf" value="{e(csrf)}">'
    return f"""<p>Signed in as <span id="email">{e(me["email"])}</span> ({e(me["role"])}).</p>
<h2>Your data</h2>
<p><a href="/console/account/export" download>Export my data</a> (one JSON file: your account
and everything stored about your networks) &middot;
<a href="/console/account/report">Access report</a></p>
<h2>Correct my details</h2>
<form method="post" action="/console/account/details">{hidden}{fields}
<button type="submit">Save</button></form>
<h2>Change password</h2>
<form method="post" action="/console/account/password">{hidden}
<label>Current <input type="password" name="old" required></label>
<label>New <input type="password" name="new" required minlength="10"></label>
<button type="submit">Change (ends your other sessions)</button></form>
<h2>Sessions</h2><table id="sessions"><thead><tr><th>From</th><th>Since</th><th>Last seen</th>
<th></th></tr></thead><tbody>{rows}</tbody></table>
<h2>Delete my account</h2>
<p>Deleting is immediate: your account, and every network you own with all its data, are
erased, and those networks' certificates are barred. Type DELETE to confirm.</p>
<form method="post" action="/console/account/delete">{hidden}
<input name="confirm" required autocomplete="off"><button type="submit">Delete</button></form>"""


def accounts(rows: list[tuple[int, str, str]]) -> str:
    """Operators' view of the accounts: ids, roles and dates only (nothing decrypted)."""
    body = "".join(f"<tr><td>{e(i)}</td><td>{e(role)}</td><td>{e(created)}</td></tr>"
                   for i, role, created in rows)
    return ("<p>Email addresses and details stay encrypted: this list decrypts nothing.</p>"
            "<table id=\"accounts\"><thead><tr><th>Account</th><th>Role</th><th>Since</th>"
            f"</tr></thead><tbody>{body}</tbody></table>")


def message(text: str) -> str:
    return f'<p class="notice" role="status">{e(text)}</p><p><a href="/console/">Back</a></p>'
