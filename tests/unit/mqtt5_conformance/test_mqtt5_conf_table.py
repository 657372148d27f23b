"""docs/mqtt5-conformance.md and the tests of this folder say the same thing.

The table names, for every normative statement of MQTT 5.0, the test that checks it under a
one-letter key for its file; a gateway integration test (key G, whose files the table gives
as a pattern) as `file::name`. These tests fail when a named test does not exist in that
file, when a statement test here or in a G file is named nowhere in the table, or when a
statement is listed twice or its row is incomplete.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parents[2]
TABLE = ROOT / "docs" / "mqtt5-conformance.md"
ROW = re.compile(r"^\| (MQTT-\d+(?:\.\d+)+-\d+) \|(.*)\|\s*$")
KEY = re.compile(r"^\| \*\*([A-Z])\*\* \| `([^`]+)` \|")
NAME = re.compile(r"(?:\b([A-Z]) )?`(?:(\w+\.py)::)?(test_\w+)`")
INTEGRATION = "G"


def _rows() -> list[tuple[str, list[str]]]:
    rows = []
    for line in TABLE.read_text().splitlines():
        match = ROW.match(line)
        if match:
            rows.append((match[1], [cell.strip() for cell in match[2].split(" | ")]))
    return rows


def _keys() -> dict[str, list[Path]]:
    """Key letter -> its test files: one in this folder, or (G) the files a pattern under the
    repository root matches."""
    keys = {}
    for line in TABLE.read_text().splitlines():
        match = KEY.match(line)
        if match and match[2].endswith(".py"):
            pattern = match[2]
            keys[match[1]] = sorted(ROOT.glob(pattern)) if "/" in pattern else [HERE / pattern]
    return keys


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test_")}


def _named() -> dict[Path, set[str]]:
    """Test names the table gives, by the file that must hold them."""
    keys = _keys()
    integration = {path.name: path for path in keys.get(INTEGRATION, [])}
    named: dict[Path, set[str]] = {}
    for statement, cells in _rows():
        key = None
        for match in NAME.finditer(cells[-1]):
            key = match[1] or key
            if match[2] is not None:  # `file::name`: a gateway integration test
                assert match[2] in integration, (
                    f"{statement}: {match[2]} is not one of the {INTEGRATION} files")
                path = integration[match[2]]
            else:
                assert key is not None, f"{match[3]} has no file key before it"
                assert key in keys, f"key {key} is not in the table of files"
                (path,) = keys[key]
            named.setdefault(path, set()).add(match[3])
    return named


def test_every_statement_is_listed_once_with_a_complete_row():
    rows = _rows()
    ids = [statement for statement, _ in rows]
    assert len(ids) == len(set(ids)) == 253
    for statement, cells in rows:
        assert len(cells) == 4, f"{statement}: binds | summary | enforced in | test or reason"
        assert all(cells), f"{statement} has an empty cell"


def test_the_integration_key_names_existing_files():
    files = _keys().get(INTEGRATION, [])
    assert "test_mqtt5_conformance_gateway.py" in {path.name for path in files}


def test_every_named_test_exists_in_its_file():
    for path, names in _named().items():
        missing = names - _tests_in(path)
        assert not missing, f"{path.name} lacks {sorted(missing)}"


def test_every_statement_test_is_named_in_the_table():
    named = _named()
    for paths in _keys().values():
        for path in paths:
            statement_tests = {n for n in _tests_in(path) if n.startswith("test_MQTT_")}
            unnamed = statement_tests - named.get(path, set())
            assert not unnamed, f"{path.name}: {sorted(unnamed)} are not in the table"
