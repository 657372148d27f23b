"""The printable label sheet of one batch of device bundles.

`fleet-ca issue device` writes `<OUT>-labels-<time>-<first serial>.html` beside the bundles
folder OUT (not in it: OUT holds only `<uuid>/` bundles, which scripts list): one label per
bundle with the network UUID, the certificate serial and the owner code, laid out for
printing (a print stylesheet, no script, nothing loaded from elsewhere). The codes are read
back from each bundle's `device.json`, the only place they exist: the sheet is as secret as
those files, and written 0600.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from html import escape
from pathlib import Path

from .bundles import DeviceBundle
from .errors import OutputError
from .inventory import serial_hex

_STYLE = """body{font-family:sans-serif;margin:0}
h1{font-size:12pt;margin:8mm 8mm 2mm}
.sheet{display:flex;flex-wrap:wrap;gap:2mm;margin:0 8mm}
.label{width:62mm;border:0.3mm dashed #888;padding:2mm;break-inside:avoid;font-size:7pt}
.label b{display:block;font-size:6pt;text-transform:uppercase;color:#555}
.label code{font-family:monospace;font-size:8pt;word-break:break-all}
.code code{font-size:10pt;font-weight:bold}
@media print{h1{display:none}.label{border-color:#ccc}}"""


def write_label_sheet(out: Path, bundles: Sequence[DeviceBundle], *,
                      now: dt.datetime) -> Path | None:
    """Write the sheet for `bundles` (issued into `out`) beside `out`; None when there are
    none. A bundle without an owner code gets a label that says so.

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
        labels.append(
            f'<div class="label" data-network="{escape(str(b.network_uuid))}">'
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
