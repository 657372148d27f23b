"""docs/mqtt5-conformance.md and the tests of this folder say the same thing.

The table names, for every normative statement of MQTT 5.0, the test that checks it under a
one-letter key for its file. These tests fail when a named test does not exist in that
file, when a statement test here is named nowhere in the table, or when a statement is
listed twice or its row is incomplete.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

HERE = Path(__file__).parent
TABLE = HERE.parents[2] / "docs" / "mqtt5-conformance.md"
ROW = re.compile(r"^\| (MQTT-\d+(?:\.\d+)+-\d+) \|(.*)\|\s*$")
KEY = re.compile(r"^\| \*\*([A-Z])\*\* \| `([^`]+)` \|")
NAME = re.compile(r"(?:\b([A-Z]) )?`(test_\w+)`")


def _rows() -> list[tuple[str, list[str]]]:
    rows = []
    for line in TABLE.read_text().splitlines():
        match = ROW.match(line)
        if match:
            rows.append((match[1], [cell.strip() for cell in match[2].split(" | ")]))
    return rows


def _keys() -> dict[str, Path]:
    keys = {}
    for line in TABLE.read_text().splitlines():
        match = KEY.match(line)
        if match and match[2].endswith(".py") and "/" not in match[2]:  # G: integration
            keys[match[1]] = HERE / match[2]
    return keys


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def _named() -> dict[str, set[str]]:
    """Test names the table gives, by key letter."""
    named: dict[str, set[str]] = {}
    for _, cells in _rows():
        key = None
        for match in NAME.finditer(cells[-1]):
            key = match[1] or key
            assert key is not None, f"{match[2]} has no file key before it"
            named.setdefault(key, set()).add(match[2])
    return named


def test_every_statement_is_listed_once_with_a_complete_row():
    rows = _rows()
    ids = [statement for statement, _ in rows]
    assert len(ids) == len(set(ids)) == 253
    for statement, cells in rows:
        assert len(cells) == 4, f"{statement}: binds | summary | enforced in | test or reason"
        assert all(cells), f"{statement} has an empty cell"


def test_every_named_test_exists_in_its_file():
    keys = _keys()
    for key, names in _named().items():
        assert key in keys, f"key {key} is not in the table of files"
        missing = names - _tests_in(keys[key])
        assert not missing, f"{keys[key].name} lacks {sorted(missing)}"


def test_every_statement_test_is_named_in_the_table():
    named = _named()
    for key, path in _keys().items():
        statement_tests = {n for n in _tests_in(path) if n.startswith("test_MQTT_")}
        unnamed = statement_tests - named.get(key, set())
        assert not unnamed, f"{path.name}: {sorted(unnamed)} are not in the table"
