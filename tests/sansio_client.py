"""A small sans-IO MQTT 3.1.1 / 5.0 client for tests, built on our codec only.

It plays the device's half against a `ServerConnection` over a fake wire: it encodes what
it sends, decodes what it receives, and answers the QoS flows the way a conforming client
does (PUBACK/PUBREC for the server's PUBLISH, PUBREL for PUBREC, PUBCOMP for PUBREL). It
records everything it saw so that tests can assert on it, and keeps a persistent session's
state across connections when `clean_session` is False. With `protocol_level=5` (or as
`SansIOClient5`) it speaks MQTT 5: it sends its CONNECT `properties`, resolves the
server's topic aliases, answers the server's PUBLISH with `ack_reason`, and records a
server DISCONNECT.

The plumbing below drives a client and a server together; malformed input is built by hand
with `raw`, `utf8`, `varint`, `prop_list` and `connect_bytes`. The names ending in 5 are
the MQTT 5 forms: their client, unless a test passes its own, is a `SansIOClient5`.
Importable from every test folder (tests/ holds the root conftest).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import partial

import pytest

from gateway.mqtt import (
    NO_PROPERTIES,
    PROTOCOL_LEVEL_5,
    Auth,
    ConnAck,
    Connect,
    ConnectionState,
    ConnectReceived,
    Disconnect,
    Event,
    Packet,
    PacketReader,
    PingReq,
    PingResp,
    Properties,
    ProtocolSessionState,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    QoS,
    RemoteProtocolError,
    ServerConnection,
    SubAck,
    Subscribe,
    SubscriptionOptions,
    UnsubAck,
    Unsubscribe,
    Will,
    decode,
    encode_into,
    make_properties,
)

Q0, Q1, Q2 = QoS.AT_MOST_ONCE, QoS.AT_LEAST_ONCE, QoS.EXACTLY_ONCE
V5 = PROTOCOL_LEVEL_5


class SansIOClient:
    """The client side of one MQTT session, possibly over several connections.

    `auto_ack=False` leaves the server's QoS 1/2 PUBLISH unanswered (a test acknowledges,
    or not, by hand)."""

    def __init__(
        self,
        client_id: str = "device-1",
        *,
        clean_session: bool = True,
        keepalive: int = 0,
        will: Will | None = None,
        protocol_level: int = 4,
        properties: Properties = NO_PROPERTIES,
        username: str | None = None,
        password: bytes | None = None,
        auto_ack: bool = True,
    ) -> None:
        self.protocol_level = protocol_level
        self.properties = properties
        self.ack_reason = 0  # MQTT 5: the reason of our PUBACK / PUBREC
        self.auto_ack = auto_ack
        self.client_id = client_id
        self.clean_session = clean_session
        self.keepalive = keepalive
        self.will = will
        self.username = username
        self.password = password
        self._next_id = 1
        # Session state (section 4.1): our unfinished outbound messages in send order, and
        # inbound QoS 2 ids we acknowledged with PUBREC and that await the server's PUBREL.
        self.outbound: dict[int, Publish | PubRel] = {}
        self.inbound_qos2: set[int] = set()
        # What the client application saw.
        self.delivered: list[Publish] = []  # inbound messages, aliases resolved, QoS 2 once
        self.completed: list[int] = []  # our packet ids whose flow finished (PUBACK/PUBCOMP)
        self.connacks: list[ConnAck] = []
        self.subacks: list[SubAck] = []
        self.unsubacks: list[UnsubAck] = []
        self.disconnects: list[Disconnect] = []
        self.acks: list[PubAck | PubRec | PubComp] = []  # the server's answers to our flows
        self.pingresps = 0
        self.new_connection()

    # ------------------------------------------------------------------ connection

    def new_connection(self) -> None:
        """Start a new network connection; a clean session forgets its state (3.1.2.4).
        Topic aliases, the server's and ours, are per connection (MQTT-3.3.2-7)."""
        self.reader = PacketReader(max_packet_size=1 << 28, protocol_level=self.protocol_level)
        self.aliases: dict[int, str] = {}
        self.own_aliases: dict[int, str] = {}
        self._out = bytearray()
        self.received: list[Packet] = []
        self.raw_received = bytearray()
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
                          self.username, self.password,
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
        self, topic: str, payload: bytes, qos: QoS = Q0, retain: bool = False,
        properties: Properties = NO_PROPERTIES,
    ) -> int | None:
        alias = properties.topic_alias
        full_topic = topic
        if alias is not None:  # MQTT 5: ours, for this connection only (3.3.2.3.4)
            if topic:
                self.own_aliases[alias] = topic
            else:
                full_topic = self.own_aliases.get(alias, "")  # "": a test breaking the rule
        if qos == Q0:
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

    def subscribe(
        self,
        *subscriptions: tuple[str, QoS],
        options: Sequence[SubscriptionOptions] = (),
        properties: Properties = NO_PROPERTIES,
    ) -> int:
        packet_id = self._allocate()
        self.send(Subscribe(packet_id, tuple(subscriptions), tuple(options), properties))
        return packet_id

    def unsubscribe(self, *topic_filters: str) -> int:
        packet_id = self._allocate()
        self.send(Unsubscribe(packet_id, tuple(topic_filters)))
        return packet_id

    def ping(self) -> None:
        self.send(PingReq())

    def disconnect(self, reason: int = 0, properties: Properties = NO_PROPERTIES) -> None:
        self.send(Disconnect(reason, properties))

    # ------------------------------------------------------------------ responses

    def receive_data(self, data: bytes) -> list[Packet]:
        """Feed bytes from the server; answer the QoS flows; return the packets."""
        self.raw_received += data
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
        maximum = self.properties.topic_alias_maximum or 0
        assert 1 <= alias <= maximum, f"server sent topic alias {alias}, our maximum {maximum}"
        if packet.topic:
            self.aliases[alias] = packet.topic
            return packet
        assert alias in self.aliases, f"server used topic alias {alias} before setting it"
        return replace(packet, topic=self.aliases[alias])

    def _handle(self, packet: Packet) -> None:
        match packet:
            case ConnAck():
                self.connacks.append(packet)
            case Publish():
                self._deliver(self._resolve(packet))
            case PubRel(packet_id=packet_id):
                self.inbound_qos2.discard(packet_id)
                self.send(PubComp(packet_id))
            case PubAck(packet_id=packet_id):
                self.acks.append(packet)
                if isinstance(self.outbound.get(packet_id), Publish):
                    del self.outbound[packet_id]
                    self.completed.append(packet_id)
            case PubRec(packet_id=packet_id, reason_code=reason):
                self.acks.append(packet)
                if reason >= 0x80:  # MQTT 5: the flow ends here (MQTT-4.4.0-2)
                    self.outbound.pop(packet_id, None)
                    return
                if packet_id in self.outbound:
                    self.outbound[packet_id] = PubRel(packet_id)
                self.send(PubRel(packet_id))
            case PubComp(packet_id=packet_id):
                self.acks.append(packet)
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
            case Auth():
                raise AssertionError("the server sent AUTH (no enhanced authentication here)")
            case _:
                raise AssertionError(f"a server sent {packet!r}")

    def _deliver(self, packet: Publish) -> None:
        """The server's PUBLISH to the application, answered unless `auto_ack` is off."""
        if packet.qos == Q0:
            self.delivered.append(packet)
        elif packet.qos == Q1:
            self.delivered.append(packet)
            if self.auto_ack:
                self.send(PubAck(packet.packet_id, self.ack_reason))
        else:
            if packet.packet_id not in self.inbound_qos2:
                self.inbound_qos2.add(packet.packet_id)
                self.delivered.append(packet)
            if self.auto_ack:
                self.send(PubRec(packet.packet_id, self.ack_reason))


class SansIOClient5(SansIOClient):
    """A `SansIOClient` at protocol level 5, in MQTT 5's words: `clean_start` (3.1.2.4)."""

    def __init__(self, client_id: str = "device-1", *, clean_start: bool = True,
                 **options) -> None:
        super().__init__(client_id, clean_session=clean_start, protocol_level=V5, **options)


# ---------------------------------------------------------------------- codec shorthands


def encode5(packet: Packet) -> bytes:
    """One packet in its MQTT 5 wire form."""
    out = bytearray()
    encode_into(packet, out, protocol_level=V5)
    return bytes(out)


def decode5(data: bytes) -> Packet:
    """Exactly one MQTT 5 packet."""
    return decode(data, protocol_level=V5)


def decode_all(data: bytes, protocol_level: int) -> list[Packet]:
    """Every packet in `data` (a server's output), in order."""
    reader = PacketReader(max_packet_size=1 << 28, protocol_level=protocol_level)
    reader.feed(data)
    packets = []
    while (packet := reader.next_packet()) is not None:
        packets.append(packet)
    assert reader.buffered == 0, "trailing bytes after the last whole packet"
    return packets


decode_all5 = partial(decode_all, protocol_level=V5)


def split_packets(data: bytes) -> list[bytes]:
    """Whole packets of `data`, as the bytes that went on the wire."""
    packets = []
    i = 0
    while i < len(data):
        length, shift, j = 0, 0, i + 1
        while True:
            byte = data[j]
            length |= (byte & 0x7F) << shift
            shift += 7
            j += 1
            if byte < 0x80:
                break
        packets.append(data[i : j + length])
        i = j + length
    return packets


def props(**values: object) -> Properties:
    """Shorthand for `make_properties`."""
    return make_properties(**values)


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
    """Client's bytes to the server, the server's events, the server's bytes to the client.

    Nothing to send feeds nothing (`receive_data(b"")` would mean EOF)."""
    data = client.data_to_send()
    if data:
        server.receive_data(data, now)
    events = drain(server)
    client.receive_data(server.data_to_send())
    return events


def flush(server: ServerConnection, client: SansIOClient) -> list[Packet]:
    """The server's queued bytes to the client; the packets it got."""
    return client.receive_data(server.data_to_send())


def connect_only(
    client: SansIOClient | None = None,
    now: float = 0.0,
    *,
    new_client: type[SansIOClient] = SansIOClient,
    **server_options: int,
) -> tuple[SansIOClient, ServerConnection, ConnectReceived]:
    """A server that received the client's CONNECT and awaits accept() or refuse()."""
    client = client or new_client()
    server = ServerConnection(**server_options)
    client.connect()
    server.receive_data(client.data_to_send(), now)
    (event,) = drain(server)
    assert isinstance(event, ConnectReceived)
    assert event.connect.protocol_level == client.protocol_level
    return client, server, event


def connected_pair(
    client: SansIOClient | None = None,
    *,
    session_present: bool = False,
    resume: ProtocolSessionState | None = None,
    now: float = 0.0,
    accept: dict | None = None,
    new_client: type[SansIOClient] = SansIOClient,
    **server_options: int,
) -> tuple[SansIOClient, ServerConnection]:
    """A client and a server past CONNECT/CONNACK 0x00 (`accept`: more arguments for it)."""
    client, server, _ = connect_only(client, now, new_client=new_client, **server_options)
    server.accept(session_present=session_present, resume=resume, **(accept or {}))
    flush(server, client)
    assert client.connacks[-1].return_code == 0
    assert client.connacks[-1].session_present is session_present
    return client, server


def refused_before_connack(
    data: bytes, rule: str | None = None, connack: int | None = None, **server_options: int
) -> RemoteProtocolError:
    """Feed `data` to a fresh server: it must fail and end in ERROR, sending nothing but
    (when `connack` is given) one MQTT 5 CONNACK with that reason code."""
    server = ServerConnection(**server_options)
    server.receive_data(data, 0.0)
    with pytest.raises(RemoteProtocolError) as info:
        drain(server)
    assert server.state is ConnectionState.ERROR
    sent = server.data_to_send()
    if connack is None:
        assert sent == b""
    else:
        packet = decode5(sent)
        assert isinstance(packet, ConnAck)
        assert packet.return_code == connack
        assert packet.session_present is False  # MQTT-3.2.2-6
    if rule is not None:
        assert info.value.rule == rule
    return info.value


def violation_after_connect(
    data: bytes,
    reason: int | None = None,
    rule: str | None = None,
    client: SansIOClient | None = None,
    accept: dict | None = None,
    *,
    new_client: type[SansIOClient] = SansIOClient,
    **server_options: int,
) -> RemoteProtocolError:
    """Feed `data` to a connected server: it must fail and end in ERROR. A 3.1.1 server
    answers nothing; an MQTT 5 one at most one DISCONNECT, with `reason` when given (4.13).
    `accept` holds accept()'s keyword arguments."""
    client, server = connected_pair(client, accept=accept, new_client=new_client,
                                    **server_options)
    server.receive_data(data, 1.0)
    with pytest.raises(RemoteProtocolError) as info:
        drain(server)
    assert server.state is ConnectionState.ERROR
    sent = decode_all(server.data_to_send(), client.protocol_level)
    assert len(sent) <= (1 if client.protocol_level == V5 else 0)  # no DISCONNECT in 3.1.1
    if sent:
        assert isinstance(sent[0], Disconnect)
        assert sent[0].reason_code >= 0x80  # the connection closes (MQTT-4.13.2-1)
        assert sent[0].reason_code == info.value.reason_code
    if reason is not None:
        assert info.value.reason_code == reason
        assert [p.reason_code for p in sent] == [reason]
    if rule is not None:
        assert info.value.rule == rule
    return info.value


connect_only5 = partial(connect_only, new_client=SansIOClient5)
connected_pair5 = partial(connected_pair, new_client=SansIOClient5)
violation_after_connect5 = partial(violation_after_connect, new_client=SansIOClient5)


# ---------------------------------------------------------------------- bytes by hand


def varint(value: int) -> bytes:
    """A Variable Byte Integer (1.5.5)."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def raw(first_byte: int, body: bytes) -> bytes:
    """A packet from its first byte and body."""
    return bytes((first_byte,)) + varint(len(body)) + body


def utf8(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return len(data).to_bytes(2, "big") + data


def prop_list(*entries: bytes) -> bytes:
    """An MQTT 5 property list from already-encoded (identifier + value) entries."""
    body = b"".join(entries)
    return varint(len(body)) + body


def connect_bytes(
    *,
    client_id: bytes = b"device-1",
    flags: int = 0x02,
    level: int = 4,
    name: bytes = b"MQTT",
    keepalive: int = 0,
    properties: bytes = b"",
    payload_tail: bytes = b"",
) -> bytes:
    """A CONNECT built by hand, to break what our encoder refuses to break; `properties`
    is the MQTT 5 property list, written as given."""
    body = utf8(name) + bytes((level, flags)) + keepalive.to_bytes(2, "big") + properties
    return raw(0x10, body + utf8(client_id) + payload_tail)


connect5_bytes = partial(connect_bytes, level=V5, properties=b"\x00")
