"""Helpers for the gateway's integration tests: PKI paths, log waits, a trio MQTT client over
real TLS, a paho wrapper. Fixtures using them are in conftest.py."""

from __future__ import annotations

import datetime as dt
import queue
import ssl
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca.store import CAHome
from gateway.app import Gateway
from gateway.mqtt.codec import PacketReader, encode
from gateway.mqtt.packets import Connect, Packet

WAIT = 20.0  # generous: a deadline for "never happened", not a timing assertion


@dataclass(frozen=True)
class Creds:
    """Client credential files: certificate chain, key, and the root to check the server."""

    cert: Path
    key: Path
    ca: Path
    network: str = ""
    serial: int = 0


@dataclass
class PKI:
    home: CAHome
    path: Path
    root: Path
    tmp: Path

    def device(self, network: uuid.UUID | None = None, **kw) -> Creds:
        """A fresh device bundle (optionally for a given network UUID)."""
        out = self.tmp / f"bundles-{uuid.uuid4().hex[:8]}"
        bundle = self.home.issue_devices(out, count=1, network=network, **kw)[0]
        return Creds(bundle.cert_path, bundle.key_path, bundle.ca_path,
                     str(bundle.network_uuid), bundle.serial)


class LogRecords:
    """The gateway's JSON log records, with a trio wait for one matching a predicate."""

    def __init__(self) -> None:
        self.records: list[dict] = []
        self._changed = trio.Event()

    def __call__(self, record: dict) -> None:
        self.records.append(record)
        self._changed.set()

    def find(self, event: str, **fields) -> list[dict]:
        return [r for r in self.records if r["event"] == event
                and all(r.get(k) == v for k, v in fields.items())]

    async def wait(self, event: str, timeout: float = WAIT, **fields) -> dict:
        with trio.fail_after(timeout):
            while True:
                found = self.find(event, **fields)
                if found:
                    return found[0]
                self._changed = trio.Event()
                await self._changed.wait()


@dataclass
class Running:
    gateway: Gateway
    host: str
    port: int
    logs: LogRecords


def client_context(creds: Creds | None, ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    if creds is not None:
        ctx.load_cert_chain(str(creds.cert), str(creds.key))
    return ctx


class MQTTTestClient:
    """A minimal MQTT client over trio TLS for exact packet-level tests."""

    def __init__(self, stream: trio.SSLStream) -> None:
        self.stream = stream
        self.reader = PacketReader(max_packet_size=16 * 1024 * 1024)

    @classmethod
    async def open(cls, running: Running, creds: Creds | None, ca: Path | None = None):
        ctx = client_context(creds, ca or creds.ca)
        tcp = await trio.open_tcp_stream(running.host, running.port)
        stream = trio.SSLStream(tcp, ctx, server_hostname="127.0.0.1")
        await stream.do_handshake()
        return cls(stream)

    async def send(self, *packets: Packet) -> None:
        await self.stream.send_all(b"".join(encode(p) for p in packets))

    async def receive(self, timeout: float = WAIT) -> Packet | None:
        """The next packet, or None when the server closed the connection."""
        with trio.fail_after(timeout):
            while True:
                packet = self.reader.next_packet()
                if packet is not None:
                    return packet
                try:
                    data = await self.stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return None
                if not data:
                    return None
                self.reader.feed(data)

    async def connect(self, client_id: str = "c", **kw) -> Packet | None:
        await self.send(Connect(client_id, **kw))
        return await self.receive()

    async def aclose(self) -> None:
        with trio.move_on_after(2):
            try:
                await self.stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass


class PahoClient:
    """A paho-mqtt client in its own network thread; callbacks feed thread-safe queues."""

    def __init__(self, running: Running, creds: Creds, client_id: str = "",
                 clean_session: bool = True, **kw) -> None:
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=client_id,
            clean_session=clean_session, protocol=paho.MQTTv311,
        )
        self.client.tls_set(str(creds.ca), str(creds.cert), str(creds.key))
        self.running = running
        self.messages: queue.Queue = queue.Queue()
        self.connacks: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.disconnected = threading.Event()
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_connect = lambda c, u, flags, rc, p: self.connacks.put((flags, rc))
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.subacks.put(codes)
        self.client.on_disconnect = lambda *a: self.disconnected.set()
        if "will" in kw:
            self.client.will_set(*kw["will"])

    async def connect(self, keepalive: int = 60):
        def run():
            self.client.connect(self.running.host, self.running.port, keepalive)
            self.client.loop_start()
            return self.connacks.get(timeout=WAIT)

        return await trio.to_thread.run_sync(run)

    async def subscribe(self, topic: str, qos: int = 0):
        self.client.subscribe(topic, qos)
        return await trio.to_thread.run_sync(lambda: self.subacks.get(timeout=WAIT))

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False):
        info = self.client.publish(topic, payload, qos, retain)
        await trio.to_thread.run_sync(lambda: info.wait_for_publish(WAIT))
        assert info.is_published()

    async def message(self, timeout: float = WAIT):
        return await trio.to_thread.run_sync(lambda: self.messages.get(timeout=timeout))

    async def no_message(self, settle_on) -> None:
        """Assert no message arrived before `settle_on` (a later message or event) did."""
        assert self.messages.empty(), self.messages.get_nowait()

    async def close(self, graceful: bool = True) -> None:
        def run():
            if graceful:
                self.client.disconnect()
            else:
                # Drop the socket without DISCONNECT: an abnormal end.
                sock = self.client.socket()
                if sock is not None:
                    sock.close()
            self.client.loop_stop()

        await trio.to_thread.run_sync(run)


def self_signed_device(tmp: Path, network: uuid.UUID) -> Creds:
    """What an attacker makes: a device-shaped certificate signed by its own key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(network))])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(f"urn:uuid:{network}")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = tmp / f"selfsigned-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    (folder / "device.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "device.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (folder / "device.key").chmod(0o600)
    return Creds(folder / "device.crt", folder / "device.key", tmp, str(network))
