"""The console's HTML: one layout and one function per page. Every text that comes from a
person or a device goes through `e` (html.escape), so script in any field is shown, inert."""

from __future__ import annotations

from html import escape
from typing import Any

from . import figures


def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def layout(title: str, body: str, *, who: str | None = None, csrf: str = "",
           operator: bool = False) -> bytes:
    nav = ""
    if who is not None:
        extra = ('<a href="/console/accounts">Accounts</a> <a href="/console/audit">Audit</a> '
                 if operator else "")
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


def login(token: str, message: str = "", *, signup: bool = False) -> bytes:
    note = f'<p class="error" role="alert">{e(message)}</p>' if message else ""
    join = ('<p>Own a device? <a href="/console/signup" id="signup-link">Create an owner '
            'account</a>.</p>') if signup else ""
    return layout("Log in", f"""{note}
<form method="post" action="/console/login" id="login">
<input type="hidden" name="csrf" value="{e(token)}">
<label>Email <input type="email" name="email" autocomplete="username" required></label>
<label>Password <input type="password" name="password" autocomplete="current-password"
 required></label>
<button type="submit">Log in</button></form>{join}""")


def signup(token: str, message: str = "", given: dict[str, str] | None = None) -> bytes:
    note = f'<p class="error" role="alert">{e(message)}</p>' if message else ""
    given = given or {}
    details = "".join(
        f'<label>{e(name.title())} (optional) <input name="{name}" maxlength="500" '
        f'value="{e(given.get(name, ""))}"></label>' for name in ("name", "phone", "address"))
    return layout("Create an owner account", f"""{note}
<p>An owner account sees only the networks it owns: after signing up, type the owner code
printed on your device's label to add its network. Your email address and details are
stored encrypted; you can export, correct or delete them at any time.</p>
<form method="post" action="/console/signup" id="signup">
<input type="hidden" name="csrf" value="{e(token)}">
<label>Email <input type="email" name="email" autocomplete="username" required maxlength="254"
 value="{e(given.get("email", ""))}"></label>
<label>Password (10 characters or more) <input type="password" name="password"
 autocomplete="new-password" required minlength="10"></label>
<label>Password again <input type="password" name="again" autocomplete="new-password"
 required minlength="10"></label>{details}
<button type="submit">Create account</button></form>
<p><a href="/console/login">Log in</a> instead.</p>""")


def overview(networks: list[dict[str, Any]], csrf: str, role: str, *,
             flt: Any = None, more: str | None = None,
             activity: dict[str, Any] | None = None, code: str = "") -> str:
    """The fleet table; `flt` is the fleet.Filter shown in the filter form, `more` the query
    of the next page (None: this is the last), `activity` the figures above it, `code` an
    owner code to prefill (from a label's QR code)."""
    rows = "".join(
        f'<tr data-network="{e(n["uuid"])}"><td><a href="/console/networks/{e(n["uuid"])}">'
        f'{e(n["uuid"])}</a></td><td class="status {e(n["status"])}">{e(n["status"])}</td>'
        f'<td>{e(n.get("last_seen") or "never")}</td>'
        f'<td>{e(n.get("cert_not_after") or "unknown")}</td>{figures.cells(n)}</tr>'
        for n in networks)
    online = sum(1 for n in networks if n["status"] == "online")
    status = getattr(flt, "status", None)
    options = "".join(f'<option value="{v}"{" selected" if status == (v or None) else ""}>'
                      f'{label}</option>' for v, label in (("", "online and offline"),
                                                          ("online", "online"),
                                                          ("offline", "offline")))
    checked = " checked" if getattr(flt, "expiring", False) else ""
    filters = f"""<form method="get" action="/console/" id="filters" class="filters">
<label>Search <input type="search" name="q" maxlength="64" value="{e(getattr(flt, "search", ""))}"
 placeholder="UUID or client id"></label>
<label>Status <select name="status">{options}</select></label>
<label><input type="checkbox" name="expiring" value="1"{checked}> certificate expires within
30 days</label> <button type="submit">Filter</button> <a href="/console/">Clear</a></form>"""
    next_link = (f'<p><a id="more" href="/console/?{e(more)}">Next page</a></p>'
                 if more else "")
    scanned = ('<p class="notice" role="status">The code of the label you scanned is filled in:'
               ' confirm to own its network.</p>') if code else ""
    claim = "" if role == "operator" else f"""
<h2 id="add">Add a network</h2>{scanned}
<form method="post" action="/console/claim" id="claim">
<input type="hidden" name="csrf" value="{e(csrf)}">
<label>Owner code (from the device's label) <input name="code" required maxlength="64"
 autocomplete="off" value="{e(code)}"></label> <button type="submit">Own this network</button>
</form>"""
    return f"""{filters}{figures.summary(activity, role == "operator")}
<p id="summary">{len(networks)} networks shown:
<span id="online">{online}</span> online, <span id="offline">{len(networks) - online}</span>
offline</p>
<table id="networks"><thead><tr><th>Network</th><th>Status</th><th>Last seen</th>
<th>Certificate expires</th><th>Reports/min</th></tr></thead>
<tbody>{rows}</tbody></table>{next_link}{claim}"""


def network(doc: dict[str, Any], charts: dict[str, str], csrf: str, picker: str = "",
            revoke: str = "") -> str:
    """A network's page; `revoke` is its revoke section (gateway.console.revoke)."""
    status = doc.get("status") or {}
    parts = [picker, f'<p>Network <code id="network-uuid">{e(doc["uuid"])}</code>: '
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
    parts.append(revoke)
    parts.append(f"""<h2>Erase this network</h2>
<p>Erasing deletes everything stored about this network at once and bars its certificate
(and revokes it, where this gateway has an online signer). Type the network's UUID to
confirm.</p>
<form method="post" action="/console/networks/{e(doc["uuid"])}/erase">
<input type="hidden" name="csrf" value="{e(csrf)}">
<input name="confirm" required autocomplete="off"><button type="submit">Erase</button></form>""")
    return "".join(parts)


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
<p>Deleting is immediate: your account, your details and your sessions are erased, and every
browser logged in as you is logged out. For the networks you own, choose:</p>
<form method="post" action="/console/account/delete" id="delete">{hidden}
<label><input type="radio" name="networks" value="erase" checked> erase them too: all their
data is deleted and their certificates are barred, and revoked where this gateway has an online
signer (the devices stop working here)</label>
<label><input type="radio" name="networks" value="release"> only give them up: your claim
is dropped; the devices and their data stay with the operators of this gateway, and the
owner code on each device's label works again (for whoever has the device next)</label>
<label>Type DELETE to confirm <input name="confirm" required autocomplete="off"></label>
<button type="submit">Delete my account</button></form>"""


def accounts(rows: list[tuple[int, str, str]]) -> str:
    """Operators' view of the accounts: ids, roles and dates only (nothing decrypted)."""
    body = "".join(f"<tr><td>{e(i)}</td><td>{e(role)}</td><td>{e(created)}</td></tr>"
                   for i, role, created in rows)
    return ("<p>Email addresses and details stay encrypted: this list decrypts nothing.</p>"
            "<table id=\"accounts\"><thead><tr><th>Account</th><th>Role</th><th>Since</th>"
            f"</tr></thead><tbody>{body}</tbody></table>")


def message(text: str) -> str:
    return f'<p class="notice" role="status">{e(text)}</p><p><a href="/console/">Back</a></p>'
