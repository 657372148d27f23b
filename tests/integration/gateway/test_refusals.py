"""Refusals a device can read: the TLS alert of a refused certificate (seen by Debian's
`openssl s_client`), a device that sends its leaf only, and the CONNACK of a device refused
after its handshake (a barred network, not a device certificate)."""

from __future__ import annotations

import datetime as dt
import shutil
import ssl
import uuid
from pathlib import Path

import pytest
import trio
from gwhelpers import WAIT, Creds, MQTTTestClient, PahoClient

from ca.store import CAHome
from gateway.mqtt.codec import encode
from gateway.mqtt.packets import ConnAck, Connect, ConnectReturnCode, Disconnect
from gateway.tls import build_server_context

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None,
                                   reason="Debian's openssl binary is not installed")


def leaf_only(creds: Creds, folder: Path) -> Creds:
    """The same device with a certificate file that holds its leaf only (what many embedded
    TLS stacks send, and what `s_client -cert` sends of any file)."""
    pem = creds.cert.read_bytes()
    marker = b"-----BEGIN CERTIFICATE-----"
    assert pem.count(marker) == 2  # fleet-ca bundles hold leaf + issuing CA
    folder.mkdir(parents=True, exist_ok=True)
    leaf = folder / "leaf.crt"
    leaf.write_bytes(marker + pem.split(marker)[1])
    return Creds(leaf, creds.key, creds.ca, creds.network, creds.serial)


async def s_client(running, ca: Path, creds: Creds | None = None, *extra: str,
                   send: bytes = b"") -> tuple[bytes, str]:
    """Run `openssl s_client -quiet` against the gateway, `send` on its stdin; (what it
    printed on stdout: the server's bytes, stderr). It ends when the server closes."""
    args = ["openssl", "s_client", "-connect", f"{running.host}:{running.port}",
            "-CAfile", str(ca), "-quiet", *extra]
    if creds is not None:
        args += ["-cert", str(creds.cert), "-key", str(creds.key)]
    with trio.fail_after(WAIT):
        done = await trio.run_process(args, stdin=send, capture_stdout=True,
                                      capture_stderr=True, check=False)
    return done.stdout, done.stderr.decode(errors="replace")


async def _alert(running, ca, creds, alert, cause, *extra):
    out, err = await s_client(running, ca, creds, *extra)
    assert alert in err, err
    assert "unexpected eof" not in err
    assert out == b""
    record = await running.logs.wait("refused", cause=cause)
    assert record["reason"] == "AUTH_ERROR"


@needs_openssl
async def test_client_without_certificate_sees_the_certificate_required_alert(
        start_gateway, pki):
    running = await start_gateway()
    await _alert(running, pki.root, None, "alert certificate required", "NO_CERTIFICATE")


@needs_openssl
async def test_tls12_client_without_certificate_sees_a_handshake_failure_alert(
        start_gateway, pki):
    # TLS 1.2 has no certificate_required alert: OpenSSL sends handshake_failure (40).
    running = await start_gateway()
    await _alert(running, pki.root, None, "alert handshake failure", "NO_CERTIFICATE",
                 "-tls1_2")


@needs_openssl
async def test_device_of_another_ca_sees_the_unknown_ca_alert(start_gateway, pki, tmp_path):
    other = CAHome.init(tmp_path / "other-ca", passphrase=None, name="other")
    bundle = other.issue_devices(tmp_path / "b", count=1)[0]
    running = await start_gateway()
    await _alert(running, pki.root, Creds(bundle.cert_path, bundle.key_path, pki.root),
                 "alert unknown ca", "UNKNOWN_CA")


@needs_openssl
async def test_revoked_device_sees_the_certificate_revoked_alert(start_gateway, pki):
    creds = pki.device()
    pki.home.revoke(creds.serial, reason="key-compromise")
    running = await start_gateway()
    await _alert(running, pki.root, creds, "alert certificate revoked", "CERT_REVOKED")


@needs_openssl
async def test_expired_device_sees_the_certificate_expired_alert(start_gateway, pki):
    past = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=30)
    creds = pki.device(now=past, days=1)
    running = await start_gateway()
    await _alert(running, pki.root, creds, "alert certificate expired", "CERT_EXPIRED")


@needs_openssl
async def test_server_certificate_as_a_client_sees_the_unsupported_certificate_alert(
        start_gateway, pki):
    # EKU serverAuth only: OpenSSL refuses its purpose during the handshake.
    server = Creds(pki.path / "server" / "server.crt", pki.path / "server" / "server.key",
                   pki.root)
    running = await start_gateway()
    await _alert(running, pki.root, server, "alert unsupported certificate", "WRONG_PURPOSE")


async def test_python_client_refused_in_the_handshake_reads_the_alert(start_gateway, pki):
    # The same alert reaches any TLS stack: Python's names it in its SSLError.
    creds = pki.device()
    pki.home.revoke(creds.serial, reason="key-compromise")
    running = await start_gateway()
    client = await MQTTTestClient.open(running, creds)  # TLS 1.3: done before the check
    with pytest.raises(trio.BrokenResourceError) as caught:
        await client.send(Connect("revoked"))
        await client.stream.receive_some(100)
    assert isinstance(caught.value.__cause__, ssl.SSLError)
    assert caught.value.__cause__.reason == "SSLV3_ALERT_CERTIFICATE_REVOKED"
    await client.aclose()


@needs_openssl
async def test_leaf_only_device_connects_with_s_client(start_gateway, pki, tmp_path):
    creds = leaf_only(pki.device(), tmp_path / "leaf")
    running = await start_gateway()
    hello = encode(Connect("leaf-only", keepalive=30)) + encode(Disconnect())
    out, err = await s_client(running, pki.root, creds, send=hello)
    assert out == encode(ConnAck(ConnectReturnCode.ACCEPTED, False)), err
    record = await running.logs.wait("connected", client_id="leaf-only")
    assert record["network"] == creds.network


async def test_leaf_only_device_publishes_with_paho(start_gateway, pki, tmp_path):
    creds = leaf_only(pki.device(), tmp_path / "leaf")
    running = await start_gateway()
    device = PahoClient(running, creds, client_id="leaf-paho")
    _, rc = await device.connect()
    assert rc == 0
    await device.subscribe("echo", qos=1)
    await device.publish("echo", b"hello", qos=1)
    assert (await device.message()).payload == b"hello"
    await device.close()


async def test_a_leaf_only_device_needs_the_issuing_ca_the_gateway_loads(pki, tmp_path):
    # Control: without the home's issuing CAs the same client is refused as UNKNOWN_CA, so
    # the client above really sent its leaf only.
    creds = leaf_only(pki.device(), tmp_path / "leaf")
    server = build_server_context(pki.root, pki.path / "crl.pem",
                                  pki.path / "server" / "server.crt",
                                  pki.path / "server" / "server.key")
    client = ssl.create_default_context(cafile=str(pki.root))
    client.load_cert_chain(str(creds.cert), str(creds.key))
    client.maximum_version = ssl.TLSVersion.TLSv1_2  # the refusal lands in the handshake
    left, right = trio.testing.memory_stream_pair()
    srv = trio.SSLStream(left, server, server_side=True)
    cli = trio.SSLStream(right, client, server_hostname="127.0.0.1")
    refused: list[BaseException] = []

    async def server_side() -> None:
        try:
            await srv.do_handshake()
        except trio.BrokenResourceError as exc:
            refused.append(exc.__cause__)
        await left.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server_side)
        with pytest.raises(trio.BrokenResourceError):
            await cli.do_handshake()
    assert isinstance(refused[0], ssl.SSLCertVerificationError)
    assert refused[0].verify_code == 20  # unable to get local issuer certificate


async def test_device_of_a_barred_network_gets_connack_not_authorized(start_gateway, pki):
    creds = pki.device()
    running = await start_gateway(bars={uuid.UUID(creds.network)})
    client = await MQTTTestClient.open(running, creds)
    assert await client.connect("barred") == ConnAck(ConnectReturnCode.NOT_AUTHORIZED, False)
    assert await client.receive() is None  # then the gateway closes
    await client.aclose()
    record = await running.logs.wait("refused", cause="BARRED")
    assert record["reason"] == "AUTH_ERROR"
    assert not running.logs.find("connected")


async def test_paho_device_of_a_barred_network_reads_not_authorized(start_gateway, pki):
    creds = pki.device()
    running = await start_gateway(bars={uuid.UUID(creds.network)})
    device = PahoClient(running, creds, client_id="barred-paho")
    _, rc = await device.connect()
    assert rc == "Not authorized"  # paho's name for 3.1.1 return code 5
    await device.close(graceful=False)


async def test_operator_certificate_gets_connack_not_authorized(start_gateway, pki, tmp_path):
    files = pki.home.issue_operator(tmp_path / "operator", name="mallory")
    running = await start_gateway()
    client = await MQTTTestClient.open(running, Creds(files.cert_path, files.key_path, pki.root))
    assert await client.connect("op") == ConnAck(ConnectReturnCode.NOT_AUTHORIZED, False)
    await client.aclose()
    await running.logs.wait("refused", cause="OPERATOR_CERTIFICATE")


@needs_openssl
async def test_a_revoked_leaf_only_device_still_sees_the_certificate_revoked_alert(
        start_gateway, pki, tmp_path):
    # Completing the chain from the CA home changes nothing about the CRL check.
    creds = leaf_only(pki.device(), tmp_path / "leaf")
    pki.home.revoke(creds.serial, reason="key-compromise")
    running = await start_gateway()
    await _alert(running, pki.root, creds, "alert certificate revoked", "CERT_REVOKED")


async def test_a_leaf_only_device_of_a_rotated_issuing_ca_connects_after_the_reload(
        start_gateway, tmp_path):
    home = CAHome.init(tmp_path / "home", passphrase=None, name="rotating")
    home.issue_server(home.path / "server", dns=["localhost"], ips=["127.0.0.1"])
    running = await start_gateway(ca_home=home.path)
    home.rotate_issuing(None)  # a new issuing CA in ca-chain.pem, and a new CRL
    await running.logs.wait("tls_reloaded", trigger="file_changed")
    bundle = home.issue_devices(tmp_path / "b", count=1)[0]
    creds = leaf_only(Creds(bundle.cert_path, bundle.key_path, home.path / "root.crt",
                            str(bundle.network_uuid), bundle.serial), tmp_path / "leaf")
    client = await MQTTTestClient.open(running, creds)
    assert await client.connect("rotated") == ConnAck(ConnectReturnCode.ACCEPTED, False)
    await client.aclose()


@pytest.mark.parametrize("sends", [b"\xff\x00garbage", b""], ids=["garbage", "nothing"])
async def test_a_peer_refused_after_its_handshake_that_sends_no_connect_is_just_closed(
        start_gateway, pki, tmp_path, sends):
    files = pki.home.issue_operator(tmp_path / "operator", name="quiet")
    running = await start_gateway(connect_timeout=0.5)
    client = await MQTTTestClient.open(running, Creds(files.cert_path, files.key_path, pki.root))
    if sends:
        await client.stream.send_all(sends)
    assert await client.receive() is None  # closed, no CONNACK
    await client.aclose()
    await running.logs.wait("refused", cause="OPERATOR_CERTIFICATE")
    assert not running.logs.find("internal_error")
