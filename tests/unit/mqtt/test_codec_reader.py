"""PacketReader's framing contract: partial data, size limit, failure, buffering."""

from __future__ import annotations

import pytest

from gateway.mqtt import (
    PacketTooLarge,
    PingReq,
    PubAck,
    Publish,
    QoS,
    RemoteProtocolError,
    Subscribe,
)
from gateway.mqtt.codec import PacketReader, decode, encode


def test_partial_packet_returns_none_until_its_last_byte_arrives() -> None:
    wire = encode(Publish("a/b", b"payload", QoS.AT_LEAST_ONCE, packet_id=1))
    reader = PacketReader()
    for i, byte in enumerate(wire[:-1]):
        reader.feed(bytes((byte,)))
        assert reader.next_packet() is None
        assert reader.buffered == i + 1
    reader.feed(wire[-1:])
    assert reader.next_packet() == Publish("a/b", b"payload", QoS.AT_LEAST_ONCE, packet_id=1)
    assert reader.next_packet() is None
    assert reader.buffered == 0


def test_empty_reader_and_empty_feed_need_more_data() -> None:
    reader = PacketReader()
    assert reader.next_packet() is None
    reader.feed(b"")
    assert reader.next_packet() is None


def test_many_packets_in_one_feed_come_out_in_order() -> None:
    packets = [PubAck(i) for i in range(1, 200)] + [PingReq(), Publish("t", b"x" * 500)]
    reader = PacketReader()
    reader.feed(b"".join(encode(p) for p in packets))
    out = []
    while (packet := reader.next_packet()) is not None:
        out.append(packet)
    assert out == packets


@pytest.mark.parametrize("chunk_size", [1, 7, 1000, 70_000])
def test_a_large_packet_in_many_chunks_decodes_once_complete(chunk_size: int) -> None:
    packet = Publish("big", bytes(range(256)) * 400, QoS.EXACTLY_ONCE, packet_id=9)  # 100 KB
    wire = encode(packet) + encode(PingReq())
    reader = PacketReader()
    out = []
    for i in range(0, len(wire), chunk_size):
        reader.feed(wire[i : i + chunk_size])
        while (decoded := reader.next_packet()) is not None:
            out.append(decoded)
    assert out == [packet, PingReq()]


def test_feeding_a_bytearray_copies_it() -> None:
    data = bytearray(encode(Publish("a", b"before")))
    reader = PacketReader()
    reader.feed(data)
    data[-6:] = b"after!"
    assert reader.next_packet() == Publish("a", b"before")


def test_packet_of_exactly_the_maximum_size_is_accepted() -> None:
    wire = encode(Publish("t", b"x" * 200))
    for chunks in ([wire], [wire[:3], wire[3:]]):
        reader = PacketReader(max_packet_size=len(wire))
        for chunk in chunks:
            reader.feed(chunk)
        assert reader.next_packet() == Publish("t", b"x" * 200)


def test_packet_one_byte_over_the_maximum_size_is_refused() -> None:
    wire = encode(Publish("t", b"x" * 100))
    for chunks in ([wire], [wire[:1], wire[1:]]):
        reader = PacketReader(max_packet_size=len(wire) - 1)
        with pytest.raises(PacketTooLarge):
            for chunk in chunks:
                reader.feed(chunk)
                reader.next_packet()


def test_size_limit_applies_to_a_header_split_across_feeds() -> None:
    reader = PacketReader(max_packet_size=1000)
    for byte in b"\x30\x80\x80\x80":
        reader.feed(bytes((byte,)))
        assert reader.next_packet() is None
    reader.feed(b"\x01")  # completes a remaining length of 2,097,152
    with pytest.raises(PacketTooLarge):
        reader.next_packet()


def test_failed_reader_raises_the_same_error_on_every_later_call() -> None:
    reader = PacketReader()
    reader.feed(encode(PingReq()) + b"\x36\x00" + encode(PingReq()))
    assert reader.next_packet() == PingReq()
    with pytest.raises(RemoteProtocolError) as first:
        reader.next_packet()
    assert first.value.rule == "MQTT-3.3.1-4"
    for call in (reader.next_packet, lambda: reader.feed(encode(PingReq()))):
        with pytest.raises(RemoteProtocolError) as again:
            call()
        assert again.value is first.value
    assert reader.buffered == 0


def test_max_packet_size_below_two_bytes_is_refused() -> None:
    with pytest.raises(ValueError):
        PacketReader(max_packet_size=1)


def test_decode_refuses_an_incomplete_packet() -> None:
    with pytest.raises(RemoteProtocolError, match="incomplete"):
        decode(encode(Subscribe(1, (("a", QoS.AT_MOST_ONCE),)))[:-1])


def test_decode_refuses_bytes_after_the_packet() -> None:
    with pytest.raises(RemoteProtocolError, match="after the packet"):
        decode(encode(PingReq()) + b"\x00")
