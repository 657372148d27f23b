"""gateway.ingest and gateway.model stay pure: importing them pulls in no event loop, network
or database; and storage builds on the model, never on ingest."""

import json
import subprocess
import sys

import pytest

FORBIDDEN = ("trio", "ssl", "socket", "sqlite3", "asyncio", "psycopg", "gateway.storage")


def _imported(module: str, names: tuple[str, ...]) -> list[str]:
    code = (
        f"import sys, json; import {module};"
        f"print(json.dumps(sorted(m for m in {names!r} if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out)


@pytest.mark.parametrize("module", ["gateway.ingest", "gateway.model"])
def test_importing_ingest_or_the_model_imports_no_io_module(module):
    assert _imported(module, FORBIDDEN) == []


def test_the_store_imports_nothing_from_ingest():
    assert _imported("gateway.storage", ("gateway.ingest",)) == []
