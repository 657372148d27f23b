"""The label sheet's QR codes: each holds its bundle's claim link (or code), read back from
the SVG's modules and compared with the QR symbol of what it should hold."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import segno

from ca import CAHome
from ca.cli import main
from ca.errors import BadInputError
from ca.labels import check_console_url, claim_link


def dark_modules(svg: str) -> set[tuple[int, int]]:
    """The dark modules (row, column) of segno's SVG path ("M x y", "m dx dy", "h n")."""
    [path] = re.findall(r' d="([^"]+)"', svg)
    x = y = 0.0
    dark = set()
    for cmd, args in re.findall(r"([MmHh])([-0-9. ]+)", path):
        nums = [float(n) for n in re.findall(r"-?[0-9.]+", args)]
        if cmd == "M":
            x, y = nums
        elif cmd == "m":
            x, y = x + nums[0], y + nums[1]
        else:
            dark.update((int(y), int(x) + i) for i in range(int(nums[0])))
            x += nums[0]
    return dark


def symbol(text: str) -> set[tuple[int, int]]:
    qr = segno.make(text, error="m", micro=False)
    return {(r + 4, c + 4) for r, row in enumerate(qr.matrix) for c, v in enumerate(row) if v}


@pytest.fixture
def home(tmp_path: Path):
    h = CAHome.init(tmp_path / "home", passphrase=None)
    yield h
    h.close()


@pytest.mark.parametrize("console", [None, "https://gw.example.org:8443/"])
def test_each_label_has_a_qr_code_of_its_claim_link(home, tmp_path, capsys, console):
    extra = ["--console", console] if console else []
    assert main(["--home", str(home.path), "issue", "device", "--count", "2",
                 "--out", str(tmp_path / "b"), *extra]) == 0
    capsys.readouterr()
    [sheet] = tmp_path.glob("b-labels-*.html")
    page = sheet.read_text()
    labels = dict(re.findall(r'<div class="label" data-network="([^"]+)"><div class="qr">'
                             r'(<svg.*?</svg>)', page))
    assert len(labels) == 2
    for net, svg in labels.items():
        code = json.loads((tmp_path / "b" / net / "device.json").read_text())["owner_code"]
        want = claim_link(console, code) if console else code
        assert dark_modules(svg) == symbol(want)
    if console:
        assert claim_link(console, "ab-12") == \
            "https://gw.example.org:8443/console/claim?code=ab-12"


def test_a_console_url_must_be_an_origin(home, tmp_path, capsys):
    for bad in ("gw.example.org", "ftp://gw", "https://gw/console?x=1", "https://gw/path"):
        with pytest.raises(BadInputError):
            check_console_url(bad)
    assert main(["--home", str(home.path), "issue", "device", "--console", "gw.example.org",
                 "--out", str(tmp_path / "b")]) != 0
    assert "console URL" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()  # refused before anything was issued
