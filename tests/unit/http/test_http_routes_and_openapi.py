"""The routing table and the OpenAPI document built from it agree, both ways."""

from __future__ import annotations

import uuid

import pytest

from gateway.http import ROUTES, ApiError, match, openapi_document


def test_every_route_is_documented_and_every_documented_operation_is_routed():
    doc = openapi_document()
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    routed = {(r.method, r.template) for r in ROUTES}
    assert documented == routed
    assert doc["openapi"] == "3.1.0"


def test_issue_7_endpoints_are_all_routed():
    routed = {(r.method, r.template) for r in ROUTES}
    assert {
        ("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/api/v1/openapi.json"),
        ("GET", "/api/v1/networks"), ("GET", "/api/v1/networks/{uuid}"),
        ("GET", "/api/v1/devices/{uuid}"), ("GET", "/api/v1/values/{uuid}"),
        ("GET", "/api/v1/values/{uuid}/reports"), ("POST", "/api/v1/values/{uuid}/control"),
        ("GET", "/api/v1/networks/{uuid}/export"), ("DELETE", "/api/v1/networks/{uuid}"),
    } <= routed


def test_only_healthz_is_open_without_an_operator():
    assert [r.template for r in ROUTES if not r.operator_only] == ["/healthz"]
    doc = openapi_document()
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    assert doc["components"]["securitySchemes"]["operatorCertificate"]["type"] == "mutualTLS"


def test_path_parameters_are_documented_as_uuids():
    doc = openapi_document()
    for path, ops in doc["paths"].items():
        for op in ops.values():
            names = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert names == ({"uuid"} if "{uuid}" in path else set()), path


def test_match_binds_uuids_and_names_the_endpoint():
    u = uuid.uuid4()
    route, params = match("GET", f"/api/v1/values/{u}/reports")
    assert route.endpoint == "value_reports" and params == {"uuid": u}


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/nope", 404),
    ("GET", "/api/v1/networks/", 404),
    ("GET", "//api/v1/networks", 404),
    ("GET", "/api/v1/networks/not-a-uuid", 404),
    ("GET", f"/api/v1/networks/{uuid.uuid4().hex}", 404),  # hyphenated form only
    ("POST", "/api/v1/networks", 405),
    ("PATCH", f"/api/v1/networks/{uuid.uuid4()}", 405),
    ("GET", "/", 404),
])
def test_match_refuses_unknown_paths_and_methods(method, path, status):
    with pytest.raises(ApiError) as err:
        match(method, path)
    assert err.value.status == status
