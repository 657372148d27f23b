"""A small sans-IO MQTT 3.1.1 / 5.0 client for tests, built on our codec only.

It plays the device's half against a `ServerConnection` over a fake wire: it encodes what
it sends, decodes what it receives, and answers the QoS flows the way a conforming client
does (PUBACK/PUBREC for the server's PUBLISH, PUBREL for PUBREC, PUBCOMP for PUBREL). It
records everything it saw so that tests can assert on it, and keeps a persistent session's
state across connections when `clean_session` is False. With `protocol_level=5` it speaks
MQTT 5: it sends its CONNECT `properties`, resolves the server's topic aliases, answers
the server's PUBLISH with `ack_reason`, and records a server DISCONNECT.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.mqtt._state import ConnectionState
from gateway.mqtt.codec import PacketReader, encode_into
from gateway.mqtt.errors import RemoteProtocolError
from gateway.mqtt.events import ConnectReceived, Event
from gateway.mqtt.packets import (
    ConnAck,
    Connect,
    ConnectReturnCode,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    QoS,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    Will,
)
from gateway.mqtt.properties import NO_PROPERTIES, Properties
from gateway.mqtt.session import ProtocolSessionState, ServerConnection


class SansIOClient:
    """The client side of one MQTT session, possibly over several connections."""

    def __init__(
        self,
        client_id: str = "device-1",
        *,
        clean_session: bool = True,
        keepalive: int = 0,
        will: Will | None = None,
        protocol_level: int = 4,
        properties: Properties = NO_PROPERTIES,
    ) -> None:
        self.protocol_level = protocol_level
        self.properties = properties
        self.ack_reason = 0  # MQTT 5: the reason of our PUBACK / PUBREC
        self.disconnects: list[Disconnect] = []
        self.client_id = client_id
        self.clean_session = clean_session
        self.keepalive = keepalive
        self.will = will
        self._next_id = 1
        # Session state (section 4.1): our unfinished outbound messages in send order, and
        # inbound QoS 2 ids we acknowledged with PUBREC and that await the server's PUBREL.
        self.outbound: dict[int, Publish | PubRel] = {}
        self.inbound_qos2: set[int] = set()
        # What the client application saw.
        self.delivered: list[Publish] = []  # inbound application messages, QoS 2 deduplicated
        self.completed: list[int] = []  # our packet ids whose flow finished (PUBACK/PUBCOMP)
        self.connacks: list[ConnAck] = []
        self.subacks: list[SubAck] = []
        self.unsubacks: list[UnsubAck] = []
        self.pingresps = 0
        self.new_connection()

    # ------------------------------------------------------------------ connection

    def new_connection(self) -> None:
        """Start a new network connection; a clean session forgets its state (3.1.2.4)."""
        self.reader = PacketReader(max_packet_size=1 << 28, protocol_level=self.protocol_level)
        self.aliases: dict[int, str] = {}  # the server's topic aliases (MQTT 5)
        self.own_aliases: dict[int, str] = {}  # ours, for this connection only
        self._out = bytearray()
        self.received: list[Packet] = []
        if self.clean_session:
            self.outbound.clear()
            self.inbound_qos2.clear()

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def send(self, packet: Packet) -> None:
        """Queue any packet, even one a conforming client would not send."""
        encode_into(packet, self._out, self.protocol_level)

    def send_raw(self, data: bytes) -> None:
        self._out += data

    # ------------------------------------------------------------------ requests

    def connect(self) -> None:
        self.send(Connect(self.client_id, self.clean_session, self.keepalive, self.will,
                          protocol_level=self.protocol_level, properties=self.properties))

    def resend_unacknowledged(self) -> None:
        """After a CONNACK on a resumed session: MQTT-4.4.0-1, DUP=1 (MQTT-3.3.1-1)."""
        for entry in self.outbound.values():
            self.send(replace(entry, dup=True) if isinstance(entry, Publish) else entry)

    def _allocate(self) -> int:
        packet_id = self._next_id
        while packet_id in self.outbound:
            packet_id = packet_id % 0xFFFF + 1
        self._next_id = packet_id % 0xFFFF + 1
        return packet_id

    def publish(
        self, topic: str, payload: bytes, qos: QoS = QoS.AT_MOST_ONCE, retain: bool = False,
        properties: Properties = NO_PROPERTIES,
    ) -> int | None:
        alias = properties.topic_alias
        full_topic = topic
        if alias is not None:  # MQTT 5: ours, for this connection only (3.3.2.3.4)
            if topic:
                self.own_aliases[alias] = topic
            else:
                full_topic = self.own_aliases.get(alias, "")  # "": a test breaking the rule
        if qos == QoS.AT_MOST_ONCE:
            self.send(Publish(topic, payload, qos, retain, properties=properties))
            return None
        packet_id = self._allocate()
        packet = Publish(topic, payload, qos, retain, packet_id=packet_id, properties=properties)
        # Kept with its full topic and no alias: a re-send after a reconnect cannot use an
        # alias of the old connection.
        self.outbound[packet_id] = replace(packet, topic=full_topic, properties=replace(
            properties, topic_alias=None)) if alias is not None else packet
        self.send(packet)
        return packet_id

    def subscribe(self, *subscriptions: tuple[str, QoS]) -> int:
        packet_id = self._allocate()
        self.send(Subscribe(packet_id, tuple(subscriptions)))
        return packet_id

    def unsubscribe(self, *topic_filters: str) -> int:
        packet_id = self._allocate()
        self.send(Unsubscribe(packet_id, tuple(topic_filters)))
        return packet_id

    def ping(self) -> None:
        self.send(PingReq())

    def disconnect(self) -> None:
        self.send(Disconnect())

    # ------------------------------------------------------------------ responses

    def receive_data(self, data: bytes) -> list[Packet]:
        """Feed bytes from the server; answer the QoS flows; return the packets."""
        self.reader.feed(data)
        packets = []
        while (packet := self.reader.next_packet()) is not None:
            packets.append(packet)
            self.received.append(packet)
            self._handle(packet)
        return packets

    def _resolve(self, packet: Publish) -> Publish:
        alias = packet.properties.topic_alias
        if alias is None:
            return packet
        if packet.topic:
            self.aliases[alias] = packet.topic
            return packet
        return replace(packet, topic=self.aliases[alias])

    def _handle(self, packet: Packet) -> None:
        if isinstance(packet, Publish):
            packet = self._resolve(packet)
        reason = self.ack_reason
        match packet:
            case ConnAck():
                self.connacks.append(packet)
            case Publish(qos=QoS.AT_MOST_ONCE):
                self.delivered.append(packet)
            case Publish(qos=QoS.AT_LEAST_ONCE, packet_id=packet_id):
                self.delivered.append(packet)
                self.send(PubAck(packet_id, reason))
            case Publish(qos=QoS.EXACTLY_ONCE, packet_id=packet_id):
                if packet_id not in self.inbound_qos2:
                    self.inbound_qos2.add(packet_id)
                    self.delivered.append(packet)
                self.send(PubRec(packet_id, reason))
            case PubRel(packet_id=packet_id):
                self.inbound_qos2.discard(packet_id)
                self.send(PubComp(packet_id))
            case PubAck(packet_id=packet_id):
                if isinstance(self.outbound.get(packet_id), Publish):
                    del self.outbound[packet_id]
                    self.completed.append(packet_id)
            case PubRec(packet_id=packet_id):
                if packet_id in self.outbound:
                    self.outbound[packet_id] = PubRel(packet_id)
                self.send(PubRel(packet_id))
            case PubComp(packet_id=packet_id):
                if isinstance(self.outbound.get(packet_id), PubRel):
                    del self.outbound[packet_id]
                    self.completed.append(packet_id)
            case SubAck():
                self.subacks.append(packet)
            case UnsubAck():
                self.unsubacks.append(packet)
            case PingResp():
                self.pingresps += 1
            case Disconnect():
                self.disconnects.append(packet)
            case _:
                raise AssertionError(f"a server sent {packet!r}")


# ---------------------------------------------------------------------- test plumbing


def drain(server: ServerConnection) -> list[Event]:
    """Every event the server has now; stops after ConnectReceived (a decision is due)."""
    events: list[Event] = []
    while (event := server.next_event()) is not None:
        events.append(event)
        if isinstance(event, ConnectReceived):
            break
    return events


def pump(client: SansIOClient, server: ServerConnection, now: float = 0.0) -> list[Event]:
    """Client's bytes to the server, the server's events, the server's bytes to the client."""
    server.receive_data(client.data_to_send(), now)
    events = drain(server)
    client.receive_data(server.data_to_send())
    return events


def flush(server: ServerConnection, client: SansIOClient) -> list[Packet]:
    """The server's queued bytes to the client; the packets it got."""
    return client.receive_data(server.data_to_send())


def connected_pair(
    client: SansIOClient | None = None,
    *,
    session_present: bool = False,
    resume: ProtocolSessionState | None = None,
    now: float = 0.0,
    accept: dict | None = None,
    **server_options: int,
) -> tuple[SansIOClient, ServerConnection]:
    """A client and a server past CONNECT/CONNACK (`accept`: more arguments for it)."""
    client = client or SansIOClient()
    server = ServerConnection(**server_options)
    client.connect()
    server.receive_data(client.data_to_send(), now)
    (event,) = drain(server)
    assert isinstance(event, ConnectReceived)
    server.accept(session_present=session_present, resume=resume, **(accept or {}))
    flush(server, client)
    if client.protocol_level == 4:
        assert client.connacks[-1] == ConnAck(ConnectReturnCode.ACCEPTED, session_present)
    else:
        assert client.connacks[-1].return_code == 0
        assert client.connacks[-1].session_present == session_present
    return client, server


def raw(first_byte: int, body: bytes) -> bytes:
    """A packet from its first byte and body (remaining length < 128 here)."""
    assert len(body) < 128
    return bytes((first_byte, len(body))) + body


def utf8(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return len(data).to_bytes(2, "big") + data


def connect_bytes(
    *,
    client_id: bytes = b"device-1",
    flags: int = 0x02,
    level: int = 4,
    name: bytes = b"MQTT",
    keepalive: int = 0,
    payload_tail: bytes = b"",
) -> bytes:
    """A CONNECT built by hand, to break what our encoder refuses to break."""
    body = utf8(name) + bytes((level, flags)) + keepalive.to_bytes(2, "big")
    return raw(0x10, body + utf8(client_id) + payload_tail)


def refused_before_connack(data: bytes, rule: str | None = None) -> RemoteProtocolError:
    """Feed `data` to a fresh server: it must fail, send nothing, and end in ERROR."""
    server = ServerConnection()
    server.receive_data(data, 0.0)
    with pytest.raises(RemoteProtocolError) as info:
        drain(server)
    assert server.state is ConnectionState.ERROR
    assert server.data_to_send() == b""
    if rule is not None:
        assert info.value.rule == rule
    return info.value


def violation_after_connect(data: bytes, rule: str | None = None) -> RemoteProtocolError:
    """Feed `data` to a connected server: it must fail, answer nothing, end in ERROR."""
    client, server = connected_pair()
    server.receive_data(data, 1.0)
    with pytest.raises(RemoteProtocolError) as info:
        drain(server)
    assert server.state is ConnectionState.ERROR
    assert server.data_to_send() == b""
    if rule is not None:
        assert info.value.rule == rule
    return info.value
