"""The printable label sheet of one batch of device bundles.

`fleet-ca issue device` writes `<OUT>-labels-<time>-<first serial>.html` beside the bundles
folder OUT (not in it: OUT holds only `<uuid>/` bundles, which scripts list): one label per
bundle with the network UUID, the certificate serial and the owner code, laid out for
printing (a print stylesheet, no script, nothing loaded from elsewhere). The codes are read
back from each bundle's `device.json`, the only place they exist: the sheet is as secret as
those files, and written 0600.

Each label also carries the code as a QR code (segno, inline SVG), so an owner scans rather
than types 39 characters: with `console_url` the QR code is the console's claim link,
`<console_url>/console/claim?code=<code>` (the console opens its *Add a network* form with
the code filled in), else the code itself.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from html import escape
from pathlib import Path
from urllib.parse import quote, urlsplit

import segno

from .bundles import DeviceBundle
from .errors import BadInputError, OutputError
from .inventory import serial_hex

_STYLE = """body{font-family:sans-serif;margin:0}
h1{font-size:12pt;margin:8mm 8mm 2mm}
.sheet{display:flex;flex-wrap:wrap;gap:2mm;margin:0 8mm}
.label{width:62mm;border:0.3mm dashed #888;padding:2mm;break-inside:avoid;font-size:7pt}
.label b{display:block;font-size:6pt;text-transform:uppercase;color:#555}
.label code{font-family:monospace;font-size:8pt;word-break:break-all}
.code code{font-size:10pt;font-weight:bold}
.qr{float:right;margin:0 0 1mm 1mm;text-align:center;font-size:5pt;color:#555}
.qr svg{display:block;width:24mm;height:24mm}
@media print{h1{display:none}.label{border-color:#ccc}}"""


def claim_link(console_url: str, code: str) -> str:
    """The console's claim link for `code` (what a label's QR code holds)."""
    return f"{console_url.rstrip('/')}/console/claim?code={quote(code, safe='-')}"


def check_console_url(url: str) -> str:
    """`url` if it is an https:// (or http://) origin the claim link can start with.

    Raises:
        BadInputError: anything else.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query \
            or parts.fragment or parts.path.rstrip("/"):
        raise BadInputError(f"console URL {url!r}: expected https://HOST[:PORT]")
    return url.rstrip("/")


def qr_svg(text: str) -> str:
    """`text` as a QR code, an inline SVG sized by the stylesheet (error correction M)."""
    return segno.make(text, error="m", micro=False).svg_inline(scale=1, omitsize=True)


def write_label_sheet(out: Path, bundles: Sequence[DeviceBundle], *,
                      now: dt.datetime, console_url: str | None = None) -> Path | None:
    """Write the sheet for `bundles` (issued into `out`) beside `out`; None when there are
    none. A bundle without an owner code gets a label that says so. With `console_url`
    (checked by `check_console_url`), each QR code is the code's claim link.

    Raises:
        OutputError: a bundle's device.json is unreadable, or the sheet cannot be written.
    """
    if not bundles:
        return None
    labels = []
    for b in bundles:
        path = Path(b.dir) / "device.json"
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise OutputError(f"cannot read {path}: {exc}") from None
        code = info.get("owner_code")
        qr = ""
        if code:
            text = claim_link(console_url, code) if console_url else code
            caption = "scan to add in the console" if console_url else "owner code"
            qr = f'<div class="qr">{qr_svg(text)}{escape(caption)}</div>'
        labels.append(
            f'<div class="label" data-network="{escape(str(b.network_uuid))}">{qr}'
            f'<b>Network UUID</b><code>{escape(str(b.network_uuid))}</code>'
            f'<b>Serial</b><code>{serial_hex(b.serial)}</code>'
            f'<div class="code"><b>Owner code (keep secret)</b><code>'
            f'{escape(code) if code else "none"}</code></div></div>')
    stamp = now.astimezone(dt.UTC)
    title = (f"fleetgate owner codes: {len(labels)} device(s), issued "
             f"{stamp.strftime('%Y-%m-%d %H:%M UTC')}")
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<title>{escape(title)}</title><style>{_STYLE}</style></head><body>'
            f'<h1>{escape(title)}</h1><div class="sheet">{"".join(labels)}</div>'
            f'</body></html>\n')
    first = bundles[0].serial
    out = Path(out).absolute()
    sheet = out.parent / f"{out.name}-labels-{stamp.strftime('%Y%m%dT%H%M%S')}-{first:x}.html"
    try:
        fd = os.open(sheet, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as exc:
        raise OutputError(f"cannot write {sheet}: {exc.strerror or exc}") from None
    return sheet
