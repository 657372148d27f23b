"""Who may use the API: operators of our CA only; /healthz answers anyone over TLS."""

from __future__ import annotations

import ssl

import pytest


async def test_healthz_answers_without_a_client_certificate(env):
    answer = await env.client().get("/healthz")
    assert answer.status == 200 and answer.json == {"status": "ok"}


@pytest.mark.parametrize("path", ["/api/v1/networks", "/metrics", "/api/v1/openapi.json"])
async def test_protected_routes_answer_401_without_a_certificate(env, path):
    answer = await env.client().get(path)
    assert answer.status == 401
    assert answer.error_code == "certificate_required"


async def test_an_operator_certificate_opens_the_api(env):
    answer = await env.operator().get("/api/v1/networks")
    assert answer.status == 200 and answer.json == {"networks": [], "next_cursor": None}


async def test_a_device_certificate_gets_403(env, device_bundle):
    client = env.client(device_bundle.cert_path, device_bundle.key_path)
    answer = await client.get("/api/v1/networks")
    assert answer.status == 403 and answer.error_code == "not_an_operator"
    # ... and still reaches /healthz on the same connection.
    assert (await client.get("/healthz")).status == 200


async def test_an_operator_certificate_of_another_ca_is_refused_at_the_handshake(
        env, foreign_operator):
    client = env.client(*foreign_operator)
    with pytest.raises(ssl.SSLError) as caught:
        await client.get("/healthz")
    assert caught.value.reason == "TLSV1_ALERT_UNKNOWN_CA"  # the alert, not a bare close
    assert env.stats.metrics.handshakes_refused.value >= 1


async def test_a_revoked_operator_certificate_is_refused(env, ca_home, tmp_path):
    files = ca_home.issue_operator(tmp_path / "op2", name="leaver")
    client = env.client(files.cert_path, files.key_path)
    assert (await client.get("/api/v1/networks")).status == 200
    ca_home.revoke(files.serial)
    env.gateway.tls.reload()  # what the gateway's file watcher does on a CRL change
    fresh = env.client(files.cert_path, files.key_path)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await fresh.get("/api/v1/networks")


async def test_a_keep_alive_connection_loses_access_when_its_certificate_is_revoked(
        env, ca_home, tmp_path):
    files = ca_home.issue_operator(tmp_path / "op3", name="keepalive")
    client = env.client(files.cert_path, files.key_path)
    assert (await client.get("/api/v1/networks")).status == 200
    ca_home.revoke(files.serial)
    env.gateway.tls.reload()
    answer = await client.get("/api/v1/networks")  # same TLS connection, still open
    assert answer.status == 403 and answer.error_code == "certificate_revoked"
    assert env.stats.metrics.connections.value == 1
