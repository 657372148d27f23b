"""Byte vectors for every MQTT 3.1.1 control packet, written by hand from the standard.

Each vector is checked both ways: `encode(packet) == wire` and `decode(wire) == packet`. The
comment beside each cites the section whose figures give its layout.
"""

from __future__ import annotations

import pytest

from gateway.mqtt import (
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
from gateway.mqtt.codec import PacketReader, decode, encode, encode_into

MQTT = b"\x00\x04MQTT"  # protocol name, section 3.1.2.1

VECTORS: list[tuple[str, bytes, Packet]] = [
    # 3.1: fixed header 0x10; 3.1.2: name, level 4, flags 0x02 (clean session), keep alive 60;
    # 3.1.3: an empty client identifier.
    (
        "connect-minimal",
        b"\x10\x0c" + MQTT + b"\x04\x02\x00\x3c\x00\x00",
        Connect(client_id="", clean_session=True, keepalive=60),
    ),
    # 3.1.2.2 to 3.1.2.10, figure 3.6's flags 0xCE: username, password, will QoS 1, will,
    # clean session; keep alive 10; 3.1.3: client id, will topic, will message, user, password.
    (
        "connect-full",
        b"\x10\x1e"
        + MQTT
        + b"\x04\xce\x00\x0a"
        + b"\x00\x03dev"
        + b"\x00\x01w"
        + b"\x00\x03bye"
        + b"\x00\x01u"
        + b"\x00\x02pw",
        Connect(
            client_id="dev",
            clean_session=True,
            keepalive=10,
            will=Will("w", b"bye", QoS.AT_LEAST_ONCE, False),
            username="u",
            password=b"pw",
        ),
    ),
    # 3.1.2.6/3.1.2.7: will QoS 2 (bits 4-3 = 10) and will retain (bit 5), no clean session.
    (
        "connect-will-qos2-retain",
        b"\x10\x12" + MQTT + b"\x04\x34\x00\x00" + b"\x00\x01c" + b"\x00\x01w" + b"\x00\x00",
        Connect(
            client_id="c",
            clean_session=False,
            keepalive=0,
            will=Will("w", b"", QoS.EXACTLY_ONCE, True),
        ),
    ),
    # 3.2: fixed header 0x20 0x02; 3.2.2: acknowledge flags, return code.
    ("connack-accepted", b"\x20\x02\x00\x00", ConnAck()),
    ("connack-session-present", b"\x20\x02\x01\x00", ConnAck(session_present=True)),
    (
        "connack-refused-version",
        b"\x20\x02\x00\x01",
        ConnAck(ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION),
    ),
    ("connack-not-authorized", b"\x20\x02\x00\x05", ConnAck(ConnectReturnCode.NOT_AUTHORIZED)),
    # 3.3.1: flags 0000 (QoS 0); 3.3.2: topic "a/b" (figure 3.11), no packet id; payload.
    ("publish-qos0", b"\x30\x07\x00\x03a/bhi", Publish("a/b", b"hi")),
    # 3.3.1: DUP (bit 3), QoS 1 (bits 2-1 = 01), RETAIN (bit 0); 3.3.2: packet id 10.
    (
        "publish-qos1-dup-retain",
        b"\x3b\x09\x00\x03a/b\x00\x0ahi",
        Publish("a/b", b"hi", QoS.AT_LEAST_ONCE, retain=True, dup=True, packet_id=10),
    ),
    # 3.3.1: QoS 2 (bits 2-1 = 10); empty payload (3.3.3 allows zero length).
    (
        "publish-qos2-empty",
        b"\x34\x05\x00\x01t\x12\x34",
        Publish("t", b"", QoS.EXACTLY_ONCE, packet_id=0x1234),
    ),
    # 2.2.3: a remaining length of 203 takes two bytes, 0xCB 0x01.
    ("publish-two-byte-length", b"\x30\xcb\x01\x00\x01t" + b"x" * 200, Publish("t", b"x" * 200)),
    # 3.4 to 3.7: fixed headers 0x40, 0x50, 0x62 (3.6.1: bits 0010), 0x70; packet id.
    ("puback", b"\x40\x02\x00\x0a", PubAck(10)),
    ("pubrec", b"\x50\x02\x00\x0a", PubRec(10)),
    ("pubrel", b"\x62\x02\x00\x0a", PubRel(10)),
    ("pubcomp", b"\x70\x02\xff\xff", PubComp(65535)),
    # 3.8: fixed header 0x82 (3.8.1: bits 0010); packet id 10; 3.8.3's example payload.
    (
        "subscribe",
        b"\x82\x0e\x00\x0a\x00\x03a/b\x01\x00\x03c/d\x02",
        Subscribe(10, (("a/b", QoS.AT_LEAST_ONCE), ("c/d", QoS.EXACTLY_ONCE))),
    ),
    ("subscribe-wildcards", b"\x82\x08\x00\x01\x00\x03+/#\x00", Subscribe(1, (("+/#", QoS(0)),))),
    # 3.9: fixed header 0x90; packet id; 3.9.3's example return codes 0x00, 0x02 and 0x80.
    ("suback", b"\x90\x05\x00\x0a\x00\x02\x80", SubAck(10, (0, 2, 0x80))),
    # 3.10: fixed header 0xA2 (3.10.1: bits 0010); packet id; 3.10.3's example payload.
    (
        "unsubscribe",
        b"\xa2\x0c\x00\x0a\x00\x03a/b\x00\x03c/d",
        Unsubscribe(10, ("a/b", "c/d")),
    ),
    # 3.11: fixed header 0xB0 0x02; packet id.
    ("unsuback", b"\xb0\x02\x00\x0a", UnsubAck(10)),
    # 3.12 to 3.14: fixed header only.
    ("pingreq", b"\xc0\x00", PingReq()),
    ("pingresp", b"\xd0\x00", PingResp()),
    ("disconnect", b"\xe0\x00", Disconnect()),
]

_ids = [name for name, _, _ in VECTORS]


@pytest.mark.parametrize(("name", "wire", "packet"), VECTORS, ids=_ids)
def test_packet_encodes_to_the_standard_bytes(name: str, wire: bytes, packet: Packet) -> None:
    assert encode(packet) == wire


@pytest.mark.parametrize(("name", "wire", "packet"), VECTORS, ids=_ids)
def test_standard_bytes_decode_to_the_packet(name: str, wire: bytes, packet: Packet) -> None:
    decoded = decode(wire)
    assert decoded == packet
    assert type(decoded) is type(packet)


def test_every_packet_type_has_a_vector() -> None:
    assert {type(packet).__name__ for _, _, packet in VECTORS} == {
        "Connect", "ConnAck", "Publish", "PubAck", "PubRec", "PubRel", "PubComp",
        "Subscribe", "SubAck", "Unsubscribe", "UnsubAck", "PingReq", "PingResp", "Disconnect",
    }  # fmt: skip


def test_all_vectors_in_one_stream_decode_in_order() -> None:
    stream = b"".join(wire for _, wire, _ in VECTORS)
    reader = PacketReader()
    reader.feed(stream)
    decoded = []
    while (packet := reader.next_packet()) is not None:
        decoded.append(packet)
    assert decoded == [packet for _, _, packet in VECTORS]


def test_encode_into_appends_a_batch_to_one_buffer() -> None:
    out = bytearray(b"prefix")
    for packet_id in (1, 2, 3):
        encode_into(PubAck(packet_id), out)
    assert out == b"prefix\x40\x02\x00\x01\x40\x02\x00\x02\x40\x02\x00\x03"
