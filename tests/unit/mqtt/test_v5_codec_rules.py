"""What the MQTT 5 codec refuses, with the reason code the session will send for it:
0x81 malformed packet, 0x82 protocol error (OASIS MQTT 5.0, sections 1.5, 2.2.2, 3, 4.8.2).
Control characters are refused by both versions (3.1.1 section 1.5.3, 5.0 section 1.5.4)."""

from __future__ import annotations

import pytest

from gateway.mqtt.codec import PacketReader, decode, encode
from gateway.mqtt.errors import LocalProtocolError, RemoteProtocolError
from gateway.mqtt.packets import (
    ConnectReturnCode,
    Publish,
    QoS,
    Subscribe,
    SubscriptionOptions,
)
from gateway.mqtt.properties import Properties, decode_properties
from gateway.mqtt.reason_codes import ConnAckCode

H = bytes.fromhex
MALFORMED, PROTOCOL = 0x81, 0x82


def refused(wire: bytes, level: int = 5) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as caught:
        decode(wire, protocol_level=level)
    return caught.value


def frame(first: int, body: bytes) -> bytes:
    return bytes((first, len(body))) + body


def publish_with(props: str) -> bytes:
    body = H("000161") + bytes((len(H(props)),)) + H(props) + b"x"
    return frame(0x30, body)


@pytest.mark.parametrize(("props", "reason"), [
    ("2a00", MALFORMED),            # shared subscription available: CONNACK only
    ("ff00", MALFORMED),            # no such property
    ("0101 0101", PROTOCOL),        # payload format indicator twice
    ("230001 230002", PROTOCOL),    # topic alias twice
    ("0102", PROTOCOL),             # payload format indicator 2
    ("230000", PROTOCOL),           # topic alias 0
    ("0b00", PROTOCOL),             # subscription identifier 0
    ("0b80808080 01", MALFORMED),   # a five-byte variable byte integer
    ("0200", MALFORMED),            # a four-byte integer cut short
])
def test_publish_properties_are_checked(props: str, reason: int) -> None:
    assert refused(publish_with(props)).reason_code == reason


def test_user_properties_and_publish_subscription_identifiers_may_repeat() -> None:
    packet = decode(publish_with("26000161000162 26000161000162 0b01 0b02"), 5)
    assert packet.properties.user_properties == (("a", "b"), ("a", "b"))
    assert packet.properties.subscription_identifiers == (1, 2)


@pytest.mark.parametrize(("kind", "props"), [
    ("CONNECT", "210000"),      # receive maximum 0
    ("CONNECT", "2700000000"),  # maximum packet size 0
    ("CONNECT", "1702"),        # request problem information 2
    ("CONNACK", "2402"),        # maximum QoS 2
    ("SUBSCRIBE", "0b01 0b02"),  # two subscription identifiers
])
def test_value_rules_are_protocol_errors(kind: str, props: str) -> None:
    body = H(props)
    with pytest.raises(RemoteProtocolError) as caught:
        decode_properties(bytes((len(body),)) + body, 0, kind)
    assert caught.value.reason_code == PROTOCOL


def test_property_length_past_the_packet_is_malformed() -> None:
    assert refused(frame(0x30, H("000161 09 0101"))).reason_code == MALFORMED


def test_empty_topic_without_an_alias_is_a_protocol_error() -> None:
    assert refused(frame(0x30, H("0000 00 78"))).reason_code == PROTOCOL


def subscribe_with(topic: bytes, options: int) -> bytes:
    return frame(0x82, H("0001 00") + len(topic).to_bytes(2, "big") + topic + bytes((options,)))


def test_MQTT_3_8_3_5_reserved_subscription_option_bits_are_malformed() -> None:
    error = refused(subscribe_with(b"a", 0x40))
    assert (error.rule, error.reason_code) == ("MQTT-3.8.3-5", MALFORMED)


def test_retain_handling_3_is_a_protocol_error() -> None:
    assert refused(subscribe_with(b"a", 0x30)).reason_code == PROTOCOL


def test_MQTT_3_8_3_4_no_local_on_a_shared_subscription_is_a_protocol_error() -> None:
    error = refused(subscribe_with(b"$share/g/a", 0x04))
    assert (error.rule, error.reason_code) == ("MQTT-3.8.3-4", PROTOCOL)
    with pytest.raises(LocalProtocolError):
        encode(Subscribe(1, (("$share/g/a", QoS.AT_MOST_ONCE),),
                         (SubscriptionOptions(no_local=True),)), 5)


@pytest.mark.parametrize("topic", [b"$share//a", b"$share/g+/a", b"$share/g", b"$share/g/",
                                   b"$share/#/a"])
def test_shared_subscription_syntax_is_checked(topic: bytes) -> None:
    assert refused(subscribe_with(topic, 0)).reason_code == PROTOCOL


def test_a_shared_filter_is_only_special_in_mqtt5() -> None:
    # 3.1.1 has no shared subscriptions: "$share/g" is an ordinary filter there.
    packet = decode(frame(0x82, H("0001") + H("0008") + b"$share/g" + b"\x00"), 4)
    assert packet.subscriptions == (("$share/g", QoS.AT_MOST_ONCE),)


@pytest.mark.parametrize("wire", [
    H("4003 0001 11"),     # PUBACK 0x11 is an UNSUBACK reason
    H("6203 0001 10"),     # PUBREL 0x10
    H("e001 05"),          # DISCONNECT 0x05 does not exist
    H("f001 01"),          # AUTH 0x01
    H("9004 0001 00 03"),  # SUBACK 0x03
    H("2003 00 05 00"),    # CONNACK 0x05 is a 3.1.1 code
])
def test_reason_codes_outside_a_packets_list_are_malformed(wire: bytes) -> None:
    assert refused(wire).reason_code == MALFORMED


def test_auth_exists_only_in_mqtt5() -> None:
    assert decode(H("f000"), 5) is not None
    refused(H("f000"), level=4)
    assert refused(H("f100")).reason_code == MALFORMED  # AUTH flags must be 0


def connect5(client_id: bytes, *, props: bytes = b"\x00", flags: int = 0x02,
             tail: bytes = b"") -> bytes:
    body = H("00044d515454 05") + bytes((flags,)) + H("0000") + props
    return frame(0x10, body + len(client_id).to_bytes(2, "big") + client_id + tail)


def test_a_malformed_mqtt5_connect_carries_its_connack_reason() -> None:
    error = refused(connect5(b"c", props=H("02 2100")))  # receive maximum cut short
    assert error.connack_code == MALFORMED
    error = refused(connect5(b"c", flags=0x03))  # reserved flag
    assert error.connack_code == MALFORMED


@pytest.mark.parametrize("text", ["a\x01b", "a\x1f", "\x7f", "x\x85y", "\x9f"])
def test_control_characters_in_topic_names_close_both_versions(text: str) -> None:
    topic = text.encode()
    for level, body in ((4, b""), (5, b"\x00")):
        wire = frame(0x30, len(topic).to_bytes(2, "big") + topic + body)
        refused(wire, level)
    with pytest.raises(LocalProtocolError):
        encode(Publish(text, b""))


@pytest.mark.parametrize("text", ["a/\x01", "\x9f/#"])
def test_control_characters_in_topic_filters_close_both_versions(text: str) -> None:
    topic = text.encode()
    refused(frame(0x82, H("0001") + len(topic).to_bytes(2, "big") + topic + b"\x00"), 4)
    refused(subscribe_with(topic, 0))


def test_printable_non_ascii_topics_are_accepted() -> None:
    for topic in ("caf\u00e9/\u00a0/\u2028", "\ufeff", "a\u00a0b"):
        data = topic.encode()
        assert decode(frame(0x30, len(data).to_bytes(2, "big") + data), 4).topic == topic


def test_control_characters_in_a_client_id_refuse_it_in_both_versions() -> None:
    v5 = refused(connect5(b"dev\x07"))
    assert v5.connack_code == ConnAckCode.CLIENT_IDENTIFIER_NOT_VALID
    body = H("00044d515454 04 02 0000") + H("0004") + b"dev\x07"
    v4 = refused(frame(0x10, body), 4)
    assert (v4.connack_code, v4.rule) == (ConnectReturnCode.IDENTIFIER_REJECTED, "MQTT-3.1.3-9")


def test_control_characters_in_a_user_name_close_both_versions() -> None:
    refused(connect5(b"c", flags=0x82, tail=H("0002") + b"u\x00"[:1] + b"\x1b"))
    body = H("00044d515454 04 82 0000 000163 0002") + b"u\x1b"
    refused(frame(0x10, body), 4)


def test_will_topic_control_characters_are_refused() -> None:
    tail = H("00 0003") + b"w\x01t" + H("0000")  # will properties, topic, payload
    refused(connect5(b"c", flags=0x06, tail=tail))


def test_a_reader_switches_to_mqtt5_on_a_level_5_connect_only() -> None:
    reader = PacketReader()
    reader.feed(connect5(b"c") + H("4003 0001 10"))
    assert reader.next_packet().protocol_level == 5
    assert reader.next_packet().reason_code == 0x10
    assert reader.protocol_level == 5


def test_a_topic_alias_publish_needs_mqtt5_to_encode() -> None:
    with pytest.raises(LocalProtocolError):
        encode(Publish("", b"", properties=Properties(topic_alias=1)), 4)
    with pytest.raises(LocalProtocolError):
        encode(Publish("", b""), 5)


@pytest.mark.parametrize("response_topic", ["a/+", "#", ""])
def test_MQTT_3_3_2_14_a_response_topic_is_a_topic_name(response_topic: str) -> None:
    data = response_topic.encode()
    props = b"\x08" + len(data).to_bytes(2, "big") + data
    wire = frame(0x30, H("000161") + bytes((len(props),)) + props)
    error = refused(wire)
    assert (error.rule, error.reason_code) == ("MQTT-3.3.2-14", PROTOCOL)
