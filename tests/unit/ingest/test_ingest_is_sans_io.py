"""gateway.ingest stays pure: importing it pulls in no event loop, network or database."""

import json
import subprocess
import sys

FORBIDDEN = ("trio", "ssl", "socket", "sqlite3", "asyncio", "psycopg", "gateway.storage")


def test_importing_gateway_ingest_imports_no_io_module():
    code = (
        "import sys, json; import gateway.ingest;"
        f"print(json.dumps(sorted(m for m in {FORBIDDEN!r} if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert json.loads(out) == []
