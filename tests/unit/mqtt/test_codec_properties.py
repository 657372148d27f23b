"""Hypothesis properties of the codec: round trips, chunking, and hostile bytes."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import client_packets, packets, publishes, server_packets

from gateway.mqtt import Packet, Publish, QoS, RemoteProtocolError
from gateway.mqtt.codec import PacketReader, decode, encode, encode_into

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def read_all(reader: PacketReader) -> list[Packet]:
    out = []
    while (packet := reader.next_packet()) is not None:
        out.append(packet)
    return out


@FAST
@given(packets)
def test_every_valid_packet_round_trips(packet: Packet) -> None:
    wire = encode(packet)
    decoded = decode(wire)
    assert decoded == packet
    assert type(decoded) is type(packet)
    assert encode(decoded) == wire


@FAST
@given(client_packets | server_packets)
def test_decoded_packets_are_frozen_and_hashable(packet: Packet) -> None:
    decoded = decode(encode(packet))
    assert hash(decoded) == hash(packet)
    fields = dataclasses.fields(decoded)
    if fields:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(decoded, fields[0].name, None)


@settings(FAST, max_examples=120)
@given(st.lists(packets, min_size=1, max_size=12), st.data())
def test_any_split_of_a_stream_yields_the_same_packets(
    sent: list[Packet], data: st.DataObject
) -> None:
    stream = bytearray()
    for packet in sent:
        encode_into(packet, stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    drain_after = data.draw(st.lists(st.booleans(), min_size=len(cuts) + 1, max_size=len(cuts) + 1))
    reader = PacketReader()
    received: list[Packet] = []
    previous = 0
    for cut, drain in zip([*cuts, len(stream)], drain_after, strict=True):
        # Feed every buffer type a caller may hold.
        chunk = bytes(stream[previous:cut])
        reader.feed(data.draw(st.sampled_from([bytes, bytearray, memoryview]))(chunk))
        previous = cut
        if drain:
            received += read_all(reader)
    received += read_all(reader)
    assert received == sent
    assert reader.buffered == 0


@settings(FAST, max_examples=60)
@given(st.lists(publishes(), min_size=1, max_size=20))
def test_a_stream_of_publishes_fed_byte_by_byte_decodes_identically(sent: list[Publish]) -> None:
    stream = b"".join(encode(packet) for packet in sent)
    reader = PacketReader()
    received = []
    for i in range(len(stream)):
        reader.feed(stream[i : i + 1])
        received += read_all(reader)
    assert received == sent


def _only_protocol_errors(chunks: list[bytes], max_packet_size: int = 512) -> None:
    reader = PacketReader(max_packet_size=max_packet_size)
    try:
        for chunk in chunks:
            reader.feed(chunk)
            read_all(reader)
    except RemoteProtocolError as first:
        # The reader stays failed: every later call raises the same error.
        with pytest.raises(RemoteProtocolError) as again:
            reader.next_packet()
        assert again.value is first
        with pytest.raises(RemoteProtocolError):
            reader.feed(b"\xc0\x00")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=6))
def test_random_bytes_raise_nothing_but_protocol_errors(chunks: list[bytes]) -> None:
    _only_protocol_errors(chunks)


@st.composite
def mutated_streams(draw: st.DrawFn) -> list[bytes]:
    """Valid packets with a few bytes overwritten, inserted or cut: bytes that get past the
    fixed header, so the field decoders see hostile input."""
    wire = bytearray(encode(draw(packets)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(wire)))
        action = draw(st.sampled_from(["set", "insert", "cut"]))
        byte = draw(st.integers(0, 255))
        if action == "set" and at < len(wire):
            wire[at] = byte
        elif action == "insert":
            wire.insert(at, byte)
        else:
            del wire[at:]
    wire += encode(draw(packets))
    cut = draw(st.integers(0, len(wire)))
    return [bytes(wire[:cut]), bytes(wire[cut:])]


@settings(max_examples=400, deadline=None)
@given(mutated_streams())
def test_mutated_packets_raise_nothing_but_protocol_errors(chunks: list[bytes]) -> None:
    _only_protocol_errors(chunks)


@FAST
@given(publishes(), st.integers(0, 255))
def test_fast_and_general_publish_decoding_agree(packet: Publish, tweak: int) -> None:
    # The hot path handles a whole PUBLISH at the head of one chunk; the general decoder
    # handles one that spans chunks. Both must give the same answer, including the error.
    wire = bytearray(encode(packet))
    if tweak < len(wire):
        wire[tweak] ^= 0xFF
    results = []
    for chunks in ([bytes(wire)], [bytes(wire[:1]), bytes(wire[1:])]):
        reader = PacketReader()
        try:
            for chunk in chunks:
                reader.feed(chunk)
            results.append(read_all(reader))
        except RemoteProtocolError as exc:
            results.append((type(exc), exc.rule, str(exc)))
    assert results[0] == results[1]


def test_hot_path_publish_is_an_ordinary_frozen_publish() -> None:
    reader = PacketReader()
    reader.feed(encode(Publish("a/b", b"x", QoS.AT_LEAST_ONCE, retain=True, packet_id=5)))
    packet = reader.next_packet()
    expected = Publish("a/b", b"x", QoS.AT_LEAST_ONCE, retain=True, packet_id=5)
    assert type(packet) is Publish
    assert packet == expected
    assert hash(packet) == hash(expected)
    assert repr(packet) == repr(expected)
    assert dataclasses.replace(packet, topic="c") == dataclasses.replace(expected, topic="c")
    with pytest.raises(dataclasses.FrozenInstanceError):
        packet.topic = "c"  # type: ignore[misc]
