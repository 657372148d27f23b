"""The read endpoints over real HTTPS against a real store: networks, tree, device, value,
history with cursors, export, metrics, and the OpenAPI document."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from httphelpers import T0, committed_so_far, seed_network, value_uuid
from prometheus_client.parser import text_string_to_metric_families


async def test_networks_list_status_serial_and_filters_by_status(env):
    online, offline = uuid.uuid4(), uuid.uuid4()
    for net in (online, offline):
        await seed_network(env.ingest, net, reports=0)
    await env.store.connected(online, "c1", "abc123", T0)
    await committed_so_far(env.store, online)
    op = env.operator()
    everyone = (await op.get("/api/v1/networks")).json["networks"]
    by_uuid = {n["uuid"]: n for n in everyone}
    assert by_uuid[str(online)]["status"] == "online"
    assert by_uuid[str(online)]["cert_serial"] == "abc123"
    assert by_uuid[str(offline)]["status"] == "offline"
    only = (await op.get("/api/v1/networks?status=online")).json["networks"]
    assert [n["uuid"] for n in only] == [str(online)]
    only = (await op.get("/api/v1/networks?status=offline")).json["networks"]
    assert [n["uuid"] for n in only] == [str(offline)]
    bad = await op.get("/api/v1/networks?status=maybe")
    assert bad.status == 400 and bad.error_code == "bad_parameter"


async def test_networks_pages_cover_every_network_once(env):
    nets = sorted(str(uuid.uuid4()) for _ in range(7))
    for net in nets:
        await seed_network(env.ingest, uuid.UUID(net), reports=0)
    op = env.operator()
    seen, path = [], "/api/v1/networks?limit=3"
    while True:
        page = (await op.get(path)).json
        assert len(page["networks"]) <= 3
        seen += [n["uuid"] for n in page["networks"]]
        if page["next_cursor"] is None:
            break
        path = f"/api/v1/networks?limit=3&cursor={page['next_cursor']}"
    assert seen == nets
    garbage = await op.get("/api/v1/networks?cursor=bm9wZQ")
    assert garbage.status == 400 and garbage.error_code == "bad_cursor"


async def test_network_tree_has_every_uuid_and_the_latest_state(env):
    net = uuid.uuid4()
    tree = await seed_network(env.ingest, net, reports=5)
    answer = await env.operator().get(f"/api/v1/networks/{net}")
    assert answer.status == 200
    got = answer.json["network"]
    assert got["uuid"] == str(net)
    (device,) = got["devices"]
    assert device["uuid"] == tree["devices"][0]["uuid"] and device["name"] == "thermo"
    temp = next(v for v in device["values"] if v["name"] == "temp")
    assert temp["uuid"] == value_uuid(tree, "temp")
    (report,) = temp["states"]
    assert report["type"] == "Report" and uuid.UUID(report["uuid"])
    assert report["latest"]["data"] == 4
    assert report["latest"]["timestamp"] == "2026-11-01T00:04:00.000000Z"
    target = next(v for v in device["values"] if v["name"] == "target")
    assert {s["type"] for s in target["states"]} == {"Report", "Control"}
    assert all(s["latest"] is None for s in target["states"])


async def test_unknown_or_malformed_uuids_are_404(env):
    op = env.operator()
    for path in (f"/api/v1/networks/{uuid.uuid4()}", f"/api/v1/devices/{uuid.uuid4()}",
                 f"/api/v1/values/{uuid.uuid4()}", f"/api/v1/values/{uuid.uuid4()}/reports",
                 f"/api/v1/networks/{uuid.uuid4()}/export", "/api/v1/networks/not-a-uuid",
                 "/api/v1/nothing"):
        answer = await op.get(path)
        assert answer.status == 404, path
        assert answer.error_code == "not_found"
    wrong = await op.request("PUT", "/api/v1/networks")
    assert wrong.status == 405 and wrong.error_code == "method_not_allowed"


async def test_device_and_value_documents(env):
    net = uuid.uuid4()
    tree = await seed_network(env.ingest, net, reports=3)
    op = env.operator()
    device_uuid = tree["devices"][0]["uuid"]
    device = (await op.get(f"/api/v1/devices/{device_uuid}")).json["device"]
    assert device["network"] == str(net) and device["description"] == "hall"
    assert [v["name"] for v in device["values"]] == ["temp", "target", "label"]
    value = (await op.get(f"/api/v1/values/{value_uuid(tree, 'temp')}")).json["value"]
    assert value["device"] == device_uuid and value["network"] == str(net)
    assert value["permission"] == "r" and value["number"]["max"] == 125
    assert value["states"][0]["latest"]["data"] == 2


async def test_history_pages_newest_and_oldest_first_with_a_time_range(env):
    net = uuid.uuid4()
    tree = await seed_network(env.ingest, net, reports=25)
    base = f"/api/v1/values/{value_uuid(tree, 'temp')}/reports"
    op = env.operator()
    for order, expected in (("newest", list(reversed(range(25)))),
                            ("oldest", list(range(25)))):
        got, path = [], f"{base}?limit=10&order={order}"
        while True:
            page = (await op.get(path)).json
            got += [r["data"] for r in page["reports"]]
            if page["next_cursor"] is None:
                break
            path = f"{base}?limit=10&order={order}&cursor={page['next_cursor']}"
        assert got == expected
    since = quote((T0 + timedelta(minutes=5)).isoformat())
    until = quote((T0 + timedelta(minutes=8)).isoformat())
    page = (await op.get(f"{base}?order=oldest&since={since}&until={until}")).json
    assert [r["data"] for r in page["reports"]] == [5, 6, 7]
    assert page["next_cursor"] is None
    assert all(r["type"] == "Report" for r in page["reports"])
    for query, code in (("limit=0", "bad_parameter"), ("since=yesterday", "bad_parameter"),
                        ("order=random", "bad_parameter"), ("cursor=%%%", "bad_cursor"),
                        ("colour=red", "bad_parameter")):
        answer = await op.get(f"{base}?{query}")
        assert answer.status == 400 and answer.error_code == code, query


async def test_a_large_history_is_streamed_chunked_and_complete(env):
    net = uuid.uuid4()
    tree = await seed_network(env.ingest, net, reports=0)
    value = uuid.UUID(value_uuid(tree, "temp"))
    from gateway.ingest import ReportRow
    now = datetime.now(UTC)
    await env.store.append_reports([
        ReportRow(value, str(i % 100), T0 + timedelta(seconds=i), now) for i in range(5000)])
    answer = await env.operator().get(f"/api/v1/values/{value}/reports?limit=5000&order=oldest")
    assert answer.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in answer.headers
    reports = answer.json["reports"]
    assert len(reports) == 5000 and answer.json["next_cursor"] is None
    assert reports[4999]["timestamp"] == "2026-11-01T01:23:19.000000Z"


async def test_export_holds_tree_states_connections_serials_and_retained(env):
    net = uuid.uuid4()
    tree = await seed_network(env.ingest, net, reports=1200)
    await env.store.connected(net, "c1", "5e41a1", T0)
    await env.store.disconnected(net, "c1", "CLIENT_DISCONNECT", T0 + timedelta(hours=2))
    await env.store.set_retained(net, "status/hello", b"\x00hi", 1, T0)
    answer = await env.operator().get(f"/api/v1/networks/{net}/export")
    assert answer.status == 200 and answer.headers.get("transfer-encoding") == "chunked"
    doc = answer.json
    assert doc["network"] == str(net) and doc["tree"]["devices"][0]["uuid"] == \
        tree["devices"][0]["uuid"]
    temp = value_uuid(tree, "temp")
    states = [s for s in doc["states"] if s["value"] == temp]
    assert len(states) == 1200  # more than one store page: all of them
    assert len({s["timestamp"] for s in states}) == 1200
    assert [e["event"] for e in doc["connections"]] == ["disconnect", "connect"]
    assert doc["certificate_serials"] == ["5e41a1"]
    assert doc["retained"] == [{"topic": "status/hello", "qos": 1, "payload_base64": "AGhp"}]
    assert doc["status"]["status"] == "offline"


async def test_metrics_is_prometheus_text_with_gateway_store_and_ingest_figures(env):
    await seed_network(env.ingest, uuid.uuid4(), reports=3)
    answer = await env.operator().get("/metrics")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(answer.body.decode())}
    for family in ("fleetgate_connections", "fleetgate_messages_in",
                   "fleetgate_store_queue_depth", "fleetgate_store_commit_seconds",
                   "fleetgate_store_batch_size", "fleetgate_revocations_applied",
                   "fleetgate_http_requests", "fleetgate_build_info", "process_cpu_seconds"):
        assert family in families, family
    for family in ("fleetgate_store_commit_seconds", "fleetgate_publish_ack_seconds",
                   "fleetgate_handshake_seconds", "fleetgate_http_request_seconds"):
        assert families[family].type == "histogram", family
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in families.values() for s in f.samples}
    assert values["fleetgate_messages_in_total", (("qos", "1"),)] == 0
    # Seeding the store committed at least once; the operator's GET answered before this one.
    assert values["fleetgate_store_commit_seconds_count", ()] >= 1
    assert values["fleetgate_http_request_seconds_count", (("route", "metrics"),)] == 0
    assert values["fleetgate_store_commit_seconds_bucket", (("le", "+Inf"),)] == \
        values["fleetgate_store_commit_seconds_count", ()]
    assert values["fleetgate_store_reports_total", ()] == 3
    # No placeholder series: a rejection reason appears once something was rejected.
    assert not any(name == "fleetgate_reports_rejected_total" for name, _ in values)


async def test_openapi_document_is_served_and_is_openapi_3_1(env):
    answer = await env.operator().get("/api/v1/openapi.json")
    doc = json.loads(answer.body)
    assert doc["openapi"] == "3.1.0" and "/api/v1/values/{uuid}/reports" in doc["paths"]


async def test_a_connected_device_shows_online_with_its_serial_and_expiry(env, device_bundle):
    from httphelpers import Device
    device = Device(*env.mqtt, device_bundle)
    (_, rc) = await device.connect()
    assert rc == 0
    # The gateway queues the CONNECT's status before it reads the next packet, so once the
    # SUBACK is here the status is queued; the barrier waits for its commit.
    await device.subscribe("x", 1)
    await committed_so_far(env.store, device_bundle.network_uuid)
    status = (await env.operator().get(f"/api/v1/networks/{device_bundle.network_uuid}")).json
    got = status["network"]["status"]
    assert got["status"] == "online" and got["cert_serial"] == format(device_bundle.serial, "x")
    assert got["cert_not_after"] == device_bundle.not_after.astimezone(UTC).isoformat(
        timespec="microseconds").replace("+00:00", "Z")
    await device.close()
