"""Revocation without restart: the CRL changes, live sessions of revoked serials close.

The revoked set is the gateway's own state, from crl.pem's verified CRLs only: it applies
whatever state the other TLS files are in, a foreign CA's CRL revokes nothing, and a stale CRL
refuses every connection, resumed sessions (TLS 1.3 tickets, TLS 1.2 session ids) included.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import ssl
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.serialization import Encoding
from gwhelpers import WAIT, Creds, MQTTTestClient, Running, client_context

from ca import build_hierarchy
from ca.crl import RevokedEntry, build_crl
from ca.store import CAHome
from gateway.mqtt.packets import ConnAck, ConnectReturnCode, PingReq, PingResp

ACCEPTED = ConnAck(ConnectReturnCode.ACCEPTED, False)


def _gateway_home(pki, tmp_path: Path) -> Path:
    """A gateway's copy of the CA home: public files and the server key, no CA key."""
    home = tmp_path / "home"
    shutil.copytree(pki.path, home, ignore=shutil.ignore_patterns("*.key", "inventory.db*"))
    shutil.copy(pki.path / "server" / "server.key", home / "server" / "server.key")
    return home


def _replace(path: Path, data: bytes) -> None:
    """Write like an operator should: a temp file renamed over the old one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


async def _connected(running: Running, creds: Creds, client_id: str) -> MQTTTestClient:
    client = await MQTTTestClient.open(running, creds)
    assert await client.connect(client_id) == ACCEPTED
    return client


async def _alive(client: MQTTTestClient) -> bool:
    await client.send(PingReq())
    return await client.receive() == PingResp()


NOT_AUTHORIZED = ConnAck(ConnectReturnCode.NOT_AUTHORIZED, False)


async def _refused_again(running: Running, creds: Creds, cause: str, *,
                         by_openssl: bool) -> None:
    """Refused by OpenSSL (its TLS alert: the client reads no CONNACK), or by the gateway's
    own check after a handshake the context admitted (CONNACK not authorized)."""
    try:
        again = await MQTTTestClient.open(running, creds)  # TLS 1.3: the client is done first
        assert await again.connect("again") == (None if by_openssl else NOT_AUTHORIZED)
    except trio.BrokenResourceError:
        assert by_openssl
    await running.logs.wait("refused", cause=cause)


async def test_revoking_a_live_device_closes_its_session_with_reason_revoked(
    start_gateway, pki, net_b
):
    running = await start_gateway()
    victim_creds = pki.device()
    victim = await MQTTTestClient.open(running, victim_creds)
    assert await victim.connect("victim") == ConnAck(ConnectReturnCode.ACCEPTED, False)
    bystander = await MQTTTestClient.open(running, net_b)
    assert await bystander.connect("bystander") == ConnAck(ConnectReturnCode.ACCEPTED, False)
    started = trio.current_time()
    # The CA's inventory connection belongs to this thread: revoke here (it takes ms).
    pki.home.revoke(victim_creds.serial, reason="key-compromise")
    assert await victim.receive() is None  # closed by the gateway
    record = await running.logs.wait("disconnected", client_id="victim")
    elapsed = trio.current_time() - started
    print(f"\nrevoke -> session closed: {elapsed * 1000:.0f} ms")  # a figure, not a test
    assert record["reason"] == "REVOKED"
    assert record["serial"] == format(victim_creds.serial, "x")
    # Nothing else was touched.
    await bystander.send(PingReq())
    assert await bystander.receive() == PingResp()
    assert running.logs.find("disconnected", client_id="bystander") == []
    # And the revoked certificate cannot come back.
    try:
        again = await MQTTTestClient.open(running, victim_creds)
        assert await again.connect("victim") is None
    except trio.BrokenResourceError:
        pass
    await running.logs.wait("refused", cause="CERT_REVOKED")


@pytest.mark.parametrize("content", ["half-written", "foreign-only"])
async def test_a_crl_file_without_a_valid_crl_keeps_the_previous_revoked_set(
    start_gateway, pki, net_a, tmp_path, content
):
    revoked = pki.device()
    pki.home.revoke(revoked.serial)
    home = _gateway_home(pki, tmp_path)
    running = await start_gateway(ca_home=home)
    live = await _connected(running, net_a, "live")
    if content == "half-written":
        data = b"-----BEGIN X509 CRL-----\ngarbage\n"
    else:  # a valid CRL of a CA the gateway does not trust, revoking nobody
        now = dt.datetime.now(dt.UTC)
        other = build_hierarchy(name="someone else", now=now)
        data = build_crl(other.issuing, [], now=now, number=1).public_bytes(Encoding.PEM)
    _replace(home / "crl.pem", data)
    record = await running.logs.wait("crl_rejected")
    assert "no valid CRL" in record["detail"]
    assert running.logs.find("crl_ignored", trigger="file_changed", position=1)
    # Never admits more: the revoked device stays out, the others stay in.
    assert revoked.serial in running.gateway.tls.revoked
    await _refused_again(running, revoked, "CERT_REVOKED", by_openssl=True)
    assert await _alive(live)
    client = await MQTTTestClient.open(running, net_a)
    assert await client.connect("still-works") == ACCEPTED


@pytest.mark.parametrize("broken", ["server-key-garbage", "server-key-missing", "root-missing"])
async def test_a_revocation_applies_while_another_tls_file_is_unusable(
    start_gateway, pki, net_b, tmp_path, broken
):
    home = _gateway_home(pki, tmp_path)
    running = await start_gateway(ca_home=home)
    victim_creds = pki.device()
    victim = await _connected(running, victim_creds, "victim")
    bystander = await _connected(running, net_b, "bystander")
    # The interim state of a server key rotation, or a root being replaced.
    if broken == "server-key-garbage":
        _replace(home / "server" / "server.key", b"not a key yet")
    elif broken == "server-key-missing":
        (home / "server" / "server.key").unlink()
    else:
        (home / "root.crt").unlink()
    await running.logs.wait("tls_reload_failed")
    pki.home.revoke(victim_creds.serial, reason="key-compromise")
    _replace(home / "crl.pem", (pki.path / "crl.pem").read_bytes())
    # The live session is cut...
    assert await victim.receive() is None
    record = await running.logs.wait("disconnected", client_id="victim")
    assert record["reason"] == "REVOKED"
    # ...although the TLS context could not take the new CRL (the old one still admits the
    # handshake: the gateway's own check after it refuses).
    assert len(running.logs.find("tls_reload_failed")) == 2
    assert victim_creds.serial not in running.gateway.tls.state.revoked
    # The old context stays (its files are unusable): the gateway's own check refuses.
    await _refused_again(running, victim_creds, "CERT_REVOKED", by_openssl=False)
    assert await _alive(bystander)
    assert await (await MQTTTestClient.open(running, net_b)).connect("bystander-2") == ACCEPTED


@pytest.mark.parametrize("same_name", [True, False], ids=["same-ca-name", "other-ca-name"])
async def test_a_foreign_cas_crl_appended_to_crl_pem_revokes_nobody(
    start_gateway, pki, tmp_path, same_name
):
    home = _gateway_home(pki, tmp_path)
    running = await start_gateway(ca_home=home)
    healthy_creds = pki.device()
    healthy = await _connected(running, healthy_creds, "healthy")
    now = dt.datetime.now(dt.UTC)
    name = "gateway tests" if same_name else "someone else"
    foreign = build_hierarchy(name=name, now=now)
    assert (foreign.issuing.cert.subject == pki.home.issuing_cert.subject) == same_name
    crl = build_crl(foreign.issuing, [RevokedEntry(healthy_creds.serial, now)], now=now,
                    number=99)
    _replace(home / "crl.pem", (home / "crl.pem").read_bytes() + crl.public_bytes(Encoding.PEM))
    ignored = await running.logs.wait("crl_ignored")
    assert ignored["position"] == 2
    assert ignored["issuer"] == foreign.issuing.cert.subject.rfc4514_string()
    why = "signature does not verify" if same_name else "not a CA the gateway trusts"
    assert why in ignored["detail"]
    loaded = await running.logs.wait("crl_loaded", trigger="file_changed")
    assert loaded["crls"] == 1
    # Applied (the new context too), and nobody was cut.
    await running.logs.wait("tls_reloaded", trigger="file_changed")
    assert healthy_creds.serial not in running.gateway.tls.revoked
    assert await _alive(healthy)
    again = await MQTTTestClient.open(running, healthy_creds)
    assert await again.connect("healthy-2") == ACCEPTED
    assert running.logs.find("revoked") == []


class _Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


async def _tls12(running: Running, ctx: ssl.SSLContext, session=None) -> trio.SSLStream:
    tcp = await trio.open_tcp_stream(running.host, running.port)
    stream = trio.SSLStream(tcp, ctx, server_hostname="127.0.0.1")
    if session is not None:
        stream.session = session
    with trio.fail_after(WAIT):
        await stream.do_handshake()
    return stream


async def test_a_stale_crl_refuses_a_resumed_tls12_session(start_gateway, pki):
    clock = _Clock()
    running = await start_gateway(clock=clock)
    creds = pki.device()
    ctx = client_context(creds, creds.ca)  # a session resumes only on its own context
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    first = MQTTTestClient(await _tls12(running, ctx))
    assert await first.connect("first") == ACCEPTED
    session = first.stream.session
    await first.aclose()
    # While the CRL is fresh the session resumes: OpenSSL verifies nothing again.
    resumed = MQTTTestClient(await _tls12(running, ctx, session))
    assert resumed.stream.session_reused
    assert await resumed.connect("resumed") == ACCEPTED
    await resumed.aclose()
    # Past the CRL's nextUpdate (a full handshake gets CRL_EXPIRED from OpenSSL), the
    # gateway's own check refuses the resumed session as well.
    next_update = running.gateway.tls.revoked.next_update
    assert next_update is not None
    clock.now = next_update + dt.timedelta(seconds=1)
    stale = MQTTTestClient(await _tls12(running, ctx, session))
    assert stale.stream.session_reused
    # TLS is up, so the refusal comes as a CONNACK: the gateway's problem, not the device's.
    assert await stale.connect("stale") == ConnAck(ConnectReturnCode.SERVER_UNAVAILABLE, False)
    record = await running.logs.wait("refused", cause="CRL_EXPIRED")
    assert "fleet-ca crl" in record["detail"]


async def _ticket(running: Running, ctx: ssl.SSLContext) -> ssl.SSLSession:
    """Connect once over TLS 1.3; the session as the gateway's ticket left it."""
    first = MQTTTestClient(await _tls12(running, ctx))
    assert first.stream.version() == "TLSv1.3"
    assert await first.connect("first") == ACCEPTED  # the ticket arrives before CONNACK
    session = first.stream.session
    await first.aclose()
    assert session is not None and session.has_ticket
    return session


async def test_a_tls13_device_resumes_with_its_ticket_and_is_checked_again(start_gateway, pki):
    running = await start_gateway()
    creds = pki.device()
    ctx = client_context(creds, creds.ca)
    session = await _ticket(running, ctx)
    resumed = MQTTTestClient(await _tls12(running, ctx, session))
    assert resumed.stream.session_reused
    assert await resumed.connect("resumed") == ACCEPTED
    record = await running.logs.wait("connected", client_id="resumed")
    assert record["serial"] == format(creds.serial, "x")  # the identity the ticket carries
    await resumed.aclose()


async def test_a_revoked_device_cannot_resume_its_tls13_session(
    start_gateway, pki, net_b, tmp_path
):
    home = _gateway_home(pki, tmp_path)
    running = await start_gateway(ca_home=home)
    victim = pki.device()
    ctx = client_context(victim, victim.ca)
    session = await _ticket(running, ctx)
    # Keep the TLS context (and so its ticket key) as it is: a server key mid-rotation
    # stops the rebuild, so the ticket still resumes after the revocation below.
    _replace(home / "server" / "server.key", b"not a key yet")
    await running.logs.wait("tls_reload_failed")
    pki.home.revoke(victim.serial, reason="key-compromise")
    _replace(home / "crl.pem", (pki.path / "crl.pem").read_bytes())
    await running.logs.wait("crl_loaded", trigger="file_changed")
    assert victim.serial in running.gateway.tls.revoked
    assert victim.serial not in running.gateway.tls.state.revoked  # the old context stays
    stolen = MQTTTestClient(await _tls12(running, ctx, session))
    assert stolen.stream.session_reused  # OpenSSL verified nothing: the gateway's check did
    assert await stolen.connect("stolen") == NOT_AUTHORIZED
    await running.logs.wait("refused", cause="CERT_REVOKED")
    assert running.logs.find("connected", client_id="stolen") == []
    # The others are untouched.
    other = MQTTTestClient(await _tls12(running, client_context(net_b, net_b.ca)))
    assert await other.connect("other") == ACCEPTED


async def test_a_new_crl_ends_every_ticket_and_the_revoked_device_gets_openssls_refusal(
    start_gateway, pki, tmp_path
):
    home = _gateway_home(pki, tmp_path)
    running = await start_gateway(ca_home=home)
    victim = pki.device()
    ctx = client_context(victim, victim.ca)
    session = await _ticket(running, ctx)
    reloads = running.gateway.tls.reloads
    pki.home.revoke(victim.serial, reason="key-compromise")
    _replace(home / "crl.pem", (pki.path / "crl.pem").read_bytes())
    await running.logs.wait("tls_reloaded")
    assert running.gateway.tls.reloads == reloads + 1
    try:  # the new context cannot read the old ticket: a full handshake, refused by OpenSSL
        stolen = MQTTTestClient(await _tls12(running, ctx, session))
        assert not stolen.stream.session_reused
        assert await stolen.connect("stolen") is None
    except trio.BrokenResourceError:
        pass
    await running.logs.wait("refused", cause="CERT_REVOKED")
    assert running.logs.find("connected", client_id="stolen") == []


async def test_new_root_and_rotated_server_certificate_apply_without_dropping_sessions(
    start_gateway, pki, net_a, tmp_path
):
    home = _gateway_home(pki, tmp_path)
    running = await start_gateway(ca_home=home)
    old = await MQTTTestClient.open(running, net_a)
    assert await old.connect("old") == ConnAck(ConnectReturnCode.ACCEPTED, False)
    # A second CA joins: its root is appended, its CRL too; the server certificate rotates.
    other = CAHome.init(tmp_path / "other", passphrase=None, name="second")
    bundle = other.issue_devices(tmp_path / "b2", count=1)[0]
    files = pki.home.issue_server(tmp_path / "rotated", ips=["127.0.0.1"])
    (home / "root.crt").write_bytes(pki.root.read_bytes() + other.root_pem)
    # Its CRL is signed by its issuing CA: the gateway believes it once it has that CA too.
    (home / "issuing.crt").write_bytes(
        (home / "issuing.crt").read_bytes() + (other.path / "issuing.crt").read_bytes()
    )
    (home / "crl.pem").write_bytes(
        (pki.path / "crl.pem").read_bytes() + (other.path / "crl.pem").read_bytes()
    )
    shutil.copy(files.cert_path, home / "server" / "server.crt")
    shutil.copy(files.key_path, home / "server" / "server.key")
    await running.logs.wait("tls_reloaded")
    await running.logs.wait("crl_loaded", trigger="file_changed", crls=2)
    newcomer = await MQTTTestClient.open(
        running, Creds(bundle.cert_path, bundle.key_path, pki.root)
    )
    assert await newcomer.connect("new") == ConnAck(ConnectReturnCode.ACCEPTED, False)
    await old.send(PingReq())
    assert await old.receive() == PingResp()
