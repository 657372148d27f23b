"""The API core without sockets: `Api.handle(Request) -> Response` over a real SQLite store."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from gateway.http import Api, ApiError, Operator, Request
from gateway.http.auth import CERTIFICATE_REQUIRED
from gateway.storage import open_sqlite_store

ALICE = Operator("alice", 1)


async def test_the_core_answers_without_any_socket(tmp_path):
    async with open_sqlite_store(tmp_path) as store:
        api = Api(store)
        ok = await api.handle(Request.from_target("GET", "/api/v1/networks", operator=ALICE))
        assert ok.status == 200 and json.loads(ok.body) == {"networks": [], "next_cursor": None}
        refused = await api.handle(Request.from_target(
            "GET", "/api/v1/networks", refusal=CERTIFICATE_REQUIRED))
        assert refused.status == 401
        assert dict(refused.headers)["www-authenticate"].startswith("Mutual")
        health = await api.handle(Request.from_target("GET", "/healthz"))
        assert health.status == 200


async def test_control_and_erasure_without_hooks_are_503_not_a_crash(tmp_path):
    import uuid
    async with open_sqlite_store(tmp_path) as store:
        api = Api(store)
        u = uuid.uuid4()
        control = await api.handle(Request("POST", f"/api/v1/values/{u}/control", {},
                                           b'{"data": 1}', "application/json", ALICE))
        erase = await api.handle(Request("DELETE", f"/api/v1/networks/{u}", {}, b"", None,
                                         ALICE))
        assert control.status == erase.status == 503


@given(st.text(max_size=200))
def test_any_request_target_parses_or_is_a_400(target):
    try:
        request = Request.from_target("GET", "/" + target)
    except ApiError as exc:
        assert exc.status == 400
    else:
        assert request.path.startswith("/")


async def test_hostile_inputs_are_400s_not_500s(tmp_path):
    import uuid

    from gateway.http.cursor import encode_cursor
    async with open_sqlite_store(tmp_path) as store:
        api = Api(store)
        v = uuid.uuid4()
        deep = b"[" * 30_000 + b"]" * 30_000
        answer = await api.handle(Request("POST", f"/api/v1/values/{v}/control", {}, deep,
                                          "application/json", ALICE))
        assert answer.status == 400 and b"bad_json" in answer.body
        for query, code in (
            ("limit=%C2%B2", b"bad_parameter"),  # a superscript two: isdigit() but not int()
            ("cursor=" + encode_cursor({"k": "reports", "value": str(v), "order": "newest",
                                        "id": 1, "ts": "2026-01-01T00:00:00"}), b"bad_cursor"),
            ("cursor=" + encode_cursor({"k": "reports", "value": str(v), "order": "newest",
                                        "id": 2**70, "ts": "2026-01-01T00:00:00+00:00"}),
             b"bad_cursor"),
            ("cursor=" + encode_cursor({"k": "reports", "value": str(v), "order": "newest",
                                        "id": "1", "ts": "2026-01-01T00:00:00+00:00"}),
             b"bad_cursor"),
        ):
            answer = await api.handle(Request.from_target(
                "GET", f"/api/v1/values/{v}/reports?{query}", operator=ALICE))
            assert answer.status == 400 and code in answer.body, (query, answer.body)
