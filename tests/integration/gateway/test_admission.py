"""Admission over real TLS: only a valid device certificate of our CA opens a jail."""

from __future__ import annotations

import datetime as dt
import ssl
import uuid
import warnings

import pytest
import trio
from gwhelpers import Creds, MQTTTestClient, self_signed_device

from ca.store import CAHome
from gateway.mqtt.packets import ConnAck, ConnectReturnCode


async def _attempt(running, creds, ca=None):
    """Handshake and CONNECT; return the CONNACK, or None when the server refused."""
    try:
        client = await MQTTTestClient.open(running, creds, ca)
    except (trio.BrokenResourceError, ssl.SSLError):
        return None
    try:
        return await client.connect("probe")
    except (trio.BrokenResourceError, ssl.SSLError):
        return None
    finally:
        await client.aclose()


async def test_device_certificate_of_our_ca_is_admitted_and_logged(start_gateway, net_a):
    running = await start_gateway()
    assert await _attempt(running, net_a) == ConnAck(ConnectReturnCode.ACCEPTED, False)
    record = await running.logs.wait("connected")
    assert record["network"] == net_a.network
    assert record["serial"] == format(net_a.serial, "x")
    assert record["client_id"] == "probe"


async def _refused(running, creds, cause, ca=None):
    assert await _attempt(running, creds, ca) is None
    record = await running.logs.wait("refused", cause=cause)
    assert record["reason"] == "AUTH_ERROR"
    assert not running.logs.find("connected")
    refused = running.gateway.metrics.mqtt.handshakes_refused.values()
    assert {k: v for k, v in refused.items() if v} == {cause: 1}  # one series, this cause
    return record


async def test_client_without_certificate_is_refused(start_gateway, pki):
    running = await start_gateway()
    await _refused(running, None, "NO_CERTIFICATE", ca=pki.root)


async def test_device_of_another_ca_is_refused(start_gateway, pki, tmp_path):
    other = CAHome.init(tmp_path / "other-ca", passphrase=None, name="other")
    bundle = other.issue_devices(tmp_path / "b", count=1)[0]
    creds = Creds(bundle.cert_path, bundle.key_path, pki.root)
    running = await start_gateway()
    await _refused(running, creds, "UNKNOWN_CA")


async def test_self_signed_device_certificate_is_refused(start_gateway, pki, tmp_path):
    creds = self_signed_device(tmp_path, uuid.uuid4())
    running = await start_gateway()
    await _refused(running, creds, "SELF_SIGNED", ca=pki.root)


async def test_expired_device_certificate_is_refused(start_gateway, pki):
    past = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=30)
    creds = pki.device(now=past, days=1)
    running = await start_gateway()
    await _refused(running, creds, "CERT_EXPIRED")


async def test_not_yet_valid_device_certificate_is_refused(start_gateway, pki):
    future = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=30)
    creds = pki.device(now=future, days=10)
    running = await start_gateway()
    await _refused(running, creds, "CERT_NOT_YET_VALID")


async def test_revoked_device_certificate_is_refused(start_gateway, pki):
    creds = pki.device()
    pki.home.revoke(creds.serial, reason="key-compromise")
    running = await start_gateway()
    await _refused(running, creds, "CERT_REVOKED")


async def test_server_certificate_is_refused_as_a_client(start_gateway, pki):
    server = Creds(pki.path / "server" / "server.crt", pki.path / "server" / "server.key",
                   pki.root)
    running = await start_gateway()
    assert await _attempt(running, server) is None
    record = await running.logs.wait("refused")
    # OpenSSL refuses it for its purpose (EKU serverAuth) before identity even looks.
    assert record["cause"] in ("WRONG_PURPOSE", "SERVER_CERTIFICATE")


async def test_operator_certificate_opens_no_jail(start_gateway, pki, tmp_path):
    files = pki.home.issue_operator(tmp_path / "operator", name="alice")
    creds = Creds(files.cert_path, files.key_path, pki.root)
    running = await start_gateway()
    # OpenSSL verifies it (EKU clientAuth): the gateway's refusal comes as a CONNACK.
    refused = ConnAck(ConnectReturnCode.NOT_AUTHORIZED, False)
    assert await _attempt(running, creds) == refused
    record = await running.logs.wait("refused", cause="OPERATOR_CERTIFICATE")
    assert record["reason"] == "AUTH_ERROR"
    assert not running.logs.find("connected")


async def test_handshake_not_finished_in_time_is_dropped(start_gateway):
    running = await start_gateway(handshake_timeout=0.2)
    tcp = await trio.open_tcp_stream(running.host, running.port)
    with trio.fail_after(20):
        assert await tcp.receive_some(10) == b""  # the gateway closed it
    record = await running.logs.wait("refused", cause="HANDSHAKE_TIMEOUT")
    assert record["reason"] == "AUTH_ERROR"
    await tcp.aclose()


def _old_client(creds, version=None, ciphers=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(creds.ca))
    ctx.load_cert_chain(str(creds.cert), str(creds.key))
    if version is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this OpenSSL offer old versions
            ctx.minimum_version = version
            ctx.maximum_version = version
    if ciphers is not None:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(ciphers)
    return ctx


@pytest.mark.parametrize(
    ("kwargs", "detail"),
    [
        ({"version": ssl.TLSVersion.TLSv1}, "UNSUPPORTED_PROTOCOL"),
        ({"version": ssl.TLSVersion.TLSv1_1}, "UNSUPPORTED_PROTOCOL"),
        ({"ciphers": "AES128-GCM-SHA256"}, "NO_SHARED_CIPHER"),  # no forward secrecy
        ({"ciphers": "ECDHE-ECDSA-AES128-SHA"}, "NO_SHARED_CIPHER"),  # CBC, not AEAD
    ],
    ids=["tls1.0", "tls1.1", "no-forward-secrecy", "no-aead"],
)
async def test_old_tls_versions_and_weak_ciphers_are_refused(
    start_gateway, net_a, kwargs, detail
):
    running = await start_gateway()
    tcp = await trio.open_tcp_stream(running.host, running.port)
    stream = trio.SSLStream(tcp, _old_client(net_a, **kwargs), server_hostname="127.0.0.1")
    with pytest.raises(trio.BrokenResourceError):
        await stream.do_handshake()
    record = await running.logs.wait("refused")
    assert (record["cause"], record["detail"]) == ("TLS_ERROR", detail)
    assert not running.logs.find("connected")


async def test_expired_crl_is_logged_at_start_and_refuses_devices(start_gateway, pki, net_a,
                                                                 tmp_path):
    import shutil

    from cryptography.hazmat.primitives.serialization import Encoding

    from ca.crl import build_crl

    home = tmp_path / "home"
    shutil.copytree(pki.path, home, ignore=shutil.ignore_patterns("inventory.db*"))
    long_ago = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=60)
    crl = build_crl(pki.home.issuer, [], now=long_ago, number=1)
    (home / "crl.pem").write_bytes(crl.public_bytes(Encoding.PEM))
    running = await start_gateway(ca_home=home)
    await running.logs.wait("crl_expired")
    await _refused(running, net_a, "CRL_EXPIRED")
