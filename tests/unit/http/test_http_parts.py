"""Pure parts of the HTTP API: cursors, request targets, Prometheus rendering, bar list,
and operator authentication on certificates made by our own `ca`."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client.parser import text_string_to_metric_families

from ca.keys import generate_key
from ca.profiles import build_device, build_operator, build_server
from gateway.http import ApiError, BarList, Operator, Request, Sample, authenticate, render
from gateway.http.cursor import decode_cursor, encode_cursor
from gateway.http.metrics import metric_samples
from gateway.metrics import GatewayMetrics
from gateway.reasons import RefusalCause

NOW = dt.datetime.now(dt.UTC)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


# -- cursors ---------------------------------------------------------------------------

def test_a_cursor_round_trips_and_is_bound_to_its_kind():
    text = encode_cursor({"k": "reports", "id": 7})
    assert decode_cursor(text, "reports") == {"k": "reports", "id": 7}
    with pytest.raises(ApiError) as err:
        decode_cursor(text, "networks")
    assert err.value.status == 400 and err.value.code == "bad_cursor"


@pytest.mark.parametrize("garbage", ["", "%%%", "bm9wZQ", "x" * 600, "W10", "e30"])
def test_garbage_cursors_are_400(garbage):
    with pytest.raises(ApiError) as err:
        decode_cursor(garbage, "reports")
    assert err.value.code == "bad_cursor"


# -- request targets -------------------------------------------------------------------

def test_request_target_is_split_and_decoded():
    r = Request.from_target("GET", "/api/v1/networks?limit=3&status=online")
    assert r.path == "/api/v1/networks" and dict(r.query) == {"limit": "3", "status": "online"}


@pytest.mark.parametrize("target", ["*", "http://x/", "/a?b=1&b=2", "/%ff", "/a?x=%ff"])
def test_bad_request_targets_are_400(target):
    with pytest.raises(ApiError) as err:
        Request.from_target("GET", target)
    assert err.value.status == 400


def test_a_json_body_needs_a_json_content_type():
    assert Request("POST", "/", {}, b'{"a":1}', "application/json; charset=utf-8").json() == \
        {"a": 1}
    with pytest.raises(ApiError) as err:
        Request("POST", "/", {}, b"{}", "text/plain").json()
    assert err.value.status == 415
    with pytest.raises(ApiError) as err:
        Request("POST", "/", {}, b"\xff", None).json()
    assert err.value.code == "bad_json"


# -- metrics ---------------------------------------------------------------------------

def _families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_render_is_exposition_a_prometheus_parser_reads_back():
    families = _families(render([
        Sample("x_total", 1, (("reason", 'a"b\\c\nd'),), help="x"),
        Sample("y", 0.25, kind="gauge"),
        Sample("x_total", 2, (("reason", "b"),)),
    ]).decode())
    x = families["fleetgate_x"]
    assert x.type == "counter" and x.documentation == "x"
    assert {(s.labels["reason"], s.value) for s in x.samples} == {('a"b\\c\nd', 1), ("b", 2)}
    assert families["fleetgate_y"].type == "gauge"
    assert families["fleetgate_y"].samples[0].value == 0.25


def test_render_adds_build_process_and_python_metrics():
    families = _families(render([]).decode())
    build = families["fleetgate_build_info"]  # an info metric: 1, the release as a label
    assert build.samples[0].value == 1 and build.samples[0].labels["version"]
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    assert "python_info" in families and "python_gc_collections" in families


def test_typed_metrics_become_labelled_families_with_every_label_at_zero():
    metrics = GatewayMetrics()
    metrics.mqtt.handshakes_refused.inc(RefusalCause.UNKNOWN_CA, 2)
    metrics.mqtt.messages_in[1].inc(5)
    metrics.mqtt.publishes_denied.inc()
    metrics.http.responses.inc(404 // 100)
    metrics.http.request_seconds["api"].observe(0.003)
    families = _families(render(metric_samples(metrics.mqtt, metrics.http)).decode())
    refused = {s.labels["reason"]: s.value
               for s in families["fleetgate_handshakes_refused"].samples}
    assert refused["UNKNOWN_CA"] == 2 and set(refused) == {str(c) for c in RefusalCause}
    assert {(s.labels["qos"], s.value) for s in families["fleetgate_messages_in"].samples} == {
        ("0", 0), ("1", 5), ("2", 0)}
    assert families["fleetgate_publishes_denied"].samples[0].value == 1
    assert families["fleetgate_revocations_applied"].samples[0].value == 0
    codes = {s.labels["code"]: s.value for s in families["fleetgate_http_responses"].samples}
    assert codes == {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 1, "5xx": 0}
    api = [s for s in families["fleetgate_http_request_seconds"].samples
           if s.labels["route"] == "api" and s.name.endswith("_count")]
    assert api[0].value == 1


# -- bar list --------------------------------------------------------------------------

def test_bar_list_persists_and_lifts(tmp_path):
    path = tmp_path / "barred.json"
    bars = BarList(path)
    net = uuid.uuid4()
    bars.bar(net, "alice", NOW)
    assert net in BarList(path) and len(BarList(path)) == 1
    assert bars.lift(net) and not bars.lift(net)
    assert net not in BarList(path)


def test_an_unreadable_bar_list_refuses_to_load(tmp_path):
    from gateway.http import HttpApiError
    path = tmp_path / "barred.json"
    path.write_text("{not json")
    with pytest.raises(HttpApiError):
        BarList(path)


# -- authentication --------------------------------------------------------------------

@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    from ca import CAHome
    home = CAHome.init(tmp_path_factory.mktemp("ca") / "h", name="unit", passphrase=None)
    yield home.issuer
    home.close()


def test_an_operator_certificate_authenticates_with_its_name(issuer):
    cert = build_operator(generate_key().public_key(), issuer=issuer, name="alice", now=NOW)
    assert authenticate(der(cert), frozenset()) == Operator("alice", cert.serial_number)


def test_no_certificate_is_401(issuer):
    result = authenticate(None, frozenset())
    assert isinstance(result, ApiError) and result.status == 401


def test_device_and_server_certificates_are_403(issuer):
    device = build_device(generate_key().public_key(), issuer=issuer, network=uuid.uuid4(),
                          now=NOW)
    server = build_server(generate_key().public_key(), issuer=issuer, dns=["x"], ips=[],
                          now=NOW)
    for cert in (device, server):
        result = authenticate(der(cert), frozenset())
        assert isinstance(result, ApiError) and result.status == 403
        assert result.code == "not_an_operator"


def test_a_revoked_operator_serial_is_403_even_if_tls_let_it_through(issuer):
    cert = build_operator(generate_key().public_key(), issuer=issuer, name="bob", now=NOW)
    result = authenticate(der(cert), frozenset({cert.serial_number}))
    assert isinstance(result, ApiError) and result.code == "certificate_revoked"


def test_garbage_certificate_bytes_are_403_not_a_crash():
    result = authenticate(b"\x30\x03\x02\x01\x00", frozenset())
    assert isinstance(result, ApiError) and result.status == 403


def test_a_double_slash_target_is_a_path_not_a_host():
    r = Request.from_target("GET", "//api/v1/networks?x=1")
    assert r.path == "//api/v1/networks" and dict(r.query) == {"x": "1"}
