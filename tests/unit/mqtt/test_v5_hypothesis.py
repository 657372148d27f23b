"""Hypothesis properties of the MQTT 5 codec and session: round trips of every packet
type, chunking, and hostile bytes (only `RemoteProtocolError` may come out)."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import mqtt_text
from strategies5 import client_packets5, packets5, properties, publishes5

from gateway.mqtt import Packet, RemoteProtocolError
from gateway.mqtt.codec import PacketReader, decode, encode, encode_into
from gateway.mqtt.packets import Connect, Publish
from gateway.mqtt.properties import ALLOWED, Properties, decode_properties, encode_properties
from gateway.mqtt.session import ServerConnection

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONNECT5 = encode(Connect("fuzz", protocol_level=5))


@FAST
@given(packets5)
def test_every_valid_mqtt5_packet_round_trips(packet: Packet) -> None:
    wire = encode(packet, 5)
    decoded = decode(wire, 5)
    assert decoded == packet
    assert type(decoded) is type(packet)
    assert hash(decoded) == hash(packet)
    assert encode(decoded, 5) == wire


@FAST
@given(st.sampled_from(sorted(ALLOWED)), st.data())
def test_every_property_list_round_trips(kind: str, data: st.DataObject) -> None:
    value = data.draw(properties(kind))
    out = bytearray()
    encode_properties(value, kind, out)
    assert decode_properties(bytes(out), 0, kind) == (value, len(out))


@settings(FAST, max_examples=100)
@given(st.lists(packets5, min_size=1, max_size=8), st.data())
def test_any_split_of_an_mqtt5_stream_yields_the_same_packets(sent: list[Packet],
                                                              data: st.DataObject) -> None:
    stream = bytearray()
    for packet in sent:
        encode_into(packet, stream, 5)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader = PacketReader(protocol_level=5)
    received: list[Packet] = []
    previous = 0
    for cut in [*cuts, len(stream)]:
        reader.feed(bytes(stream[previous:cut]))
        previous = cut
        while (packet := reader.next_packet()) is not None:
            received.append(packet)
    assert received == sent


@settings(FAST, max_examples=400)
@given(st.binary(max_size=200))
def test_random_bytes_into_an_mqtt5_reader_raise_only_protocol_errors(data: bytes) -> None:
    reader = PacketReader(protocol_level=5)
    try:
        reader.feed(data)
        while reader.next_packet() is not None:
            pass
    except RemoteProtocolError as exc:
        assert exc.reason_code >= 0x80


@settings(FAST, max_examples=300)
@given(st.binary(max_size=120), st.integers(0, 40))
def test_mutated_mqtt5_packets_raise_only_protocol_errors(noise: bytes, at: int) -> None:
    # Valid framing with garbage inside reaches the body decoders and the property parser.
    body = noise[:127]
    for first in (0x30, 0x32, 0x40, 0x62, 0x82, 0x90, 0xA2, 0xB0, 0xE0, 0xF0, 0x20):
        reader = PacketReader(protocol_level=5)
        try:
            reader.feed(bytes((first, len(body))) + body)
            reader.next_packet()
        except RemoteProtocolError as exc:
            assert exc.reason_code >= 0x80


@settings(FAST, max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_after_an_mqtt5_connect_end_in_a_disconnect_or_nothing(
        data: bytes) -> None:
    server = ServerConnection()
    server.receive_data(CONNECT5, 0.0)
    server.next_event()
    server.accept()
    server.data_to_send()
    server.receive_data(data, 1.0)
    try:
        while server.next_event() is not None:
            pass
    except RemoteProtocolError:
        sent = server.data_to_send()
        assert sent[:1] == b"\xe0"  # the DISCONNECT with the error's reason
        disconnect = decode(sent, 5)
        assert disconnect.reason_code >= 0x80


@settings(FAST, max_examples=150)
@given(st.lists(client_packets5.filter(lambda p: not isinstance(p, Connect)), max_size=6))
def test_any_client_packet_sequence_leaves_the_session_consistent(sent: list[Packet]) -> None:
    server = ServerConnection()
    server.receive_data(CONNECT5, 0.0)
    server.next_event()
    server.accept()
    stream = bytearray()
    for packet in sent:
        encode_into(packet, stream, 5)
    server.receive_data(bytes(stream), 1.0)
    try:
        while server.next_event() is not None:
            pass
    except RemoteProtocolError as exc:
        assert exc.reason_code >= 0x80
    out = PacketReader(protocol_level=5)
    out.feed(server.data_to_send())
    while out.next_packet() is not None:  # whatever the server sent is valid MQTT 5
        pass


common_properties = st.builds(
    Properties,
    payload_format_indicator=st.none() | st.integers(0, 1),
    message_expiry_interval=st.none() | st.integers(0, 0xFFFF_FFFF),
    topic_alias=st.none() | st.integers(1, 0xFFFF),
    user_properties=st.lists(st.tuples(mqtt_text(max_size=3), mqtt_text(max_size=3)),
                             max_size=2).map(tuple),
)


@settings(FAST, max_examples=300)
@given(publishes5(), common_properties, st.integers(0, 255), st.booleans())
def test_fast_and_general_mqtt5_publish_decoding_agree(packet: Publish, props: Properties,
                                                       tweak: int, twice: bool) -> None:
    # The hot path (inline property parser and its per-reader cache) handles a whole
    # PUBLISH at the head of one chunk; the general decoder one that spans chunks. Both
    # must give the same answer, including the error; a second copy hits the cache.
    if props != Properties():
        packet = dataclasses.replace(packet, properties=props, topic=packet.topic or "t")
    wire = bytearray(encode(packet, 5))
    if tweak < len(wire):
        wire[tweak] ^= 0xFF
    wire = bytes(wire) * (2 if twice else 1)
    results = []
    for chunks in ([wire], [wire[i : i + 1] for i in range(len(wire))]):
        reader = PacketReader(protocol_level=5)
        got: list[object] = []
        try:
            for chunk in chunks:
                reader.feed(chunk)
                while (decoded := reader.next_packet()) is not None:
                    got.append(decoded)
        except RemoteProtocolError as exc:
            got.append((type(exc), exc.rule, exc.reason_code))
        results.append(got)
    assert results[0] == results[1]
