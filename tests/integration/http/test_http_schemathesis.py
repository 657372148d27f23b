"""Schemathesis, driven by our OpenAPI document, finds no 5xx on any operation (positive and
negative generation), against the real HTTPS server with an operator certificate.

The server runs in its own thread (its own trio loop), because schemathesis and requests
are synchronous. Bounded: a few examples per operation and mode, so it runs in seconds.
"""

from __future__ import annotations

import queue
import threading
import uuid
import zlib

import pytest
import requests
import schemathesis
import trio
from httphelpers import seed_network, start_env
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from gateway.http import openapi_document
from gateway.storage import open_sqlite_store

EXAMPLES = 12


@pytest.fixture
def threaded_env(ca_home, tmp_path):
    ready: queue.Queue = queue.Queue()
    stop: list = []

    async def main() -> None:
        stopped = trio.Event()
        stop.append((trio.lowlevel.current_trio_token(), stopped.set))
        async with open_sqlite_store(tmp_path / "d") as store, trio.open_nursery() as nursery:
            env = await start_env(ca_home, tmp_path / "d", nursery, store)
            tree = await seed_network(env.ingest, uuid.uuid4(), reports=20)
            ready.put((env, tree))
            await stopped.wait()
            nursery.cancel_scope.cancel()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    env, tree = ready.get(timeout=60)
    yield env, tree
    token, set_stopped = stop[0]
    trio.from_thread.run_sync(set_stopped, trio_token=token)
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_schemathesis_finds_no_server_error_on_any_operation(threaded_env):
    env, tree = threaded_env
    schema = schemathesis.openapi.from_dict(openapi_document())
    op_dir = env.home.path / "operator"
    session = requests.Session()
    session.cert = (str(op_dir / "operator.crt"), str(op_dir / "operator.key"))
    session.verify = str(env.root)
    base = f"https://{env.http[0]}:{env.http[1]}"
    # Known UUIDs as well as random ones, so generated requests also reach stored data.
    known = [tree["uuid"], tree["devices"][0]["uuid"],
             *(v["uuid"] for v in tree["devices"][0]["values"])]
    seen: dict[str, set[int]] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len(p) for p in openapi_document()["paths"].values())
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and not (
                    operation.query or operation.body or operation.path_parameters):
                continue
            seen.setdefault(operation.label, set())

            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case) -> None:
                pick = zlib.crc32(str((case.path_parameters or {}).get("uuid")).encode())
                if case.path_parameters and "uuid" in case.path_parameters and pick % 2:
                    case.path_parameters["uuid"] = known[pick % len(known)]
                response = case.call(base_url=base, session=session, timeout=30,
                                     verify=session.verify, cert=session.cert)
                seen[case.operation.label].add(response.status_code)
                assert response.status_code < 500, (case.as_curl_command(), response.text)
                ctype = (response.headers.get("content-type") or [""])[0]
                if ctype.startswith("application/json"):
                    response.json()  # every JSON answer is complete and parseable

            check()
    assert all(statuses for statuses in seen.values())
    # The reads that exist answered 200 at least once: the generated requests got through.
    assert 200 in seen["GET /healthz"] and 200 in seen["GET /api/v1/networks"]
