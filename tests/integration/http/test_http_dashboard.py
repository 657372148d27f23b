"""The Grafana dashboard shipped in packaging/grafana asks only for metrics the gateway
exposes: a renamed metric would leave an empty panel nobody notices."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

from httphelpers import seed_network
from prometheus_client.parser import text_string_to_metric_families

DASHBOARD = Path(__file__).parents[3] / "packaging" / "grafana" / "fleetgate.json"
# The one family whose series appear only once something is counted (its label, the
# rejection reason, is ingest's); the gateway's own families show every label at 0.
LABELLED_ONLY = {"fleetgate_reports_rejected_total"}


def _asked_for(dashboard: dict) -> set[str]:
    names = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names |= set(re.findall(r"\b((?:fleetgate|process|python)_[a-z0-9_]+)\b",
                                    target["expr"]))
    return names


async def test_every_dashboard_query_names_an_exposed_metric(env):
    await seed_network(env.ingest, uuid.uuid4(), reports=3)
    assert (await env.operator().get("/healthz")).status == 200  # a response to count
    body = (await env.operator().get("/metrics")).body.decode()
    exposed = {s.name for f in text_string_to_metric_families(body) for s in f.samples}
    dashboard = json.loads(DASHBOARD.read_text())
    asked = _asked_for(dashboard)
    assert len(asked) >= 10
    missing = asked - exposed - LABELLED_ONLY
    assert not missing, f"the dashboard asks for metrics /metrics never shows: {missing}"
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
