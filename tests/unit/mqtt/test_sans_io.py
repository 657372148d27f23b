"""gateway.mqtt must stay sans-IO: importing it pulls in no networking, TLS or event loop."""

import json
import subprocess
import sys

FORBIDDEN = ("trio", "ssl", "socket", "sqlite3", "select", "selectors", "asyncio", "psycopg")


def test_importing_gateway_mqtt_imports_no_io_module():
    code = (
        "import sys, json; import gateway.mqtt, gateway.mqtt.packets;"
        f"print(json.dumps(sorted(m for m in {FORBIDDEN!r} if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert json.loads(out) == []
