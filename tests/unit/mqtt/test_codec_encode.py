"""encode refuses (LocalProtocolError) every packet the standard forbids sending."""

from __future__ import annotations

import pytest

from gateway.mqtt import (
    ConnAck,
    Connect,
    ConnectReturnCode,
    LocalProtocolError,
    Packet,
    PubAck,
    Publish,
    PubRel,
    QoS,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    Will,
)
from gateway.mqtt.codec import encode, encode_into

FORBIDDEN: list[tuple[str, object]] = [
    ("publish-qos0-with-packet-id", Publish("t", b"", packet_id=1)),
    ("publish-qos1-without-packet-id", Publish("t", b"", QoS.AT_LEAST_ONCE)),
    ("publish-qos2-packet-id-0", Publish("t", b"", QoS.EXACTLY_ONCE, packet_id=0)),
    ("publish-packet-id-too-big", Publish("t", b"", QoS.AT_LEAST_ONCE, packet_id=65536)),
    ("publish-qos0-dup", Publish("t", b"", dup=True)),  # MQTT-3.3.1-2
    ("publish-qos3", Publish("t", b"", 3, packet_id=1)),  # type: ignore[arg-type]
    ("publish-wildcard-topic", Publish("a/+", b"")),  # MQTT-3.3.2-2
    ("publish-empty-topic", Publish("", b"")),  # MQTT-4.7.3-1
    ("publish-topic-null", Publish("a\x00", b"")),  # MQTT-4.7.3-2
    ("publish-topic-surrogate", Publish("a\udc80", b"")),  # MQTT-1.5.3-1
    ("puback-packet-id-0", PubAck(0)),
    ("pubrel-packet-id-none", PubRel(None)),  # type: ignore[arg-type]
    ("unsuback-packet-id-too-big", UnsubAck(70000)),
    ("connack-reserved-code", ConnAck(6)),  # type: ignore[arg-type]
    (
        "connack-refused-with-session-present",  # MQTT-3.2.2-4
        ConnAck(ConnectReturnCode.NOT_AUTHORIZED, session_present=True),
    ),
    ("connect-password-without-username", Connect("c", password=b"pw")),  # MQTT-3.1.2-22
    ("connect-will-qos3", Connect("c", will=Will("w", b"", 3))),  # type: ignore[arg-type]
    ("connect-will-wildcard", Connect("c", will=Will("w/#", b""))),
    ("connect-keepalive-too-big", Connect("c", keepalive=65536)),
    ("connect-client-id-null", Connect("c\x00")),
    ("subscribe-no-filter", Subscribe(1, ())),  # MQTT-3.8.3-3
    ("subscribe-bad-filter", Subscribe(1, (("a/#/b", QoS.AT_MOST_ONCE),))),
    ("subscribe-qos3", Subscribe(1, (("a", 3),))),  # type: ignore[arg-type]
    ("subscribe-packet-id-0", Subscribe(0, (("a", QoS.AT_MOST_ONCE),))),
    ("suback-no-code", SubAck(1, ())),
    ("suback-reserved-code", SubAck(1, (3,))),  # MQTT-3.9.3-2
    ("unsubscribe-no-filter", Unsubscribe(1, ())),  # MQTT-3.10.3-2
    ("unsubscribe-bad-filter", Unsubscribe(1, ("a+",))),
    ("not-a-packet", object()),
]


@pytest.mark.parametrize(
    "packet", [packet for _, packet in FORBIDDEN], ids=[name for name, _ in FORBIDDEN]
)
def test_forbidden_packet_is_our_error_and_leaves_the_buffer_untouched(packet: Packet) -> None:
    out = bytearray(b"\x40\x02\x00\x01")
    with pytest.raises(LocalProtocolError):
        encode_into(packet, out)
    assert out == b"\x40\x02\x00\x01"
    with pytest.raises(LocalProtocolError):
        encode(packet)


class _Huge(bytes):
    """Claims the largest payload the remaining length cannot carry, without the memory."""

    def __len__(self) -> int:
        return 268_435_455


def test_publish_larger_than_the_remaining_length_allows_is_our_error() -> None:
    out = bytearray()
    with pytest.raises(LocalProtocolError):
        encode_into(Publish("t", _Huge()), out)
    assert out == b""


def test_connect_may_name_another_protocol_level_for_testing_servers() -> None:
    # A client-side test needs to send level 3 or 5; the decoder is what refuses it.
    wire = encode(Connect("c", protocol_level=5))
    assert wire[8] == 5
