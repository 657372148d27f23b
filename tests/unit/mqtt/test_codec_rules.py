"""One test per normative statement the decoder enforces on a packet in isolation.

Each test feeds hand-made bytes (layouts from MQTT 3.1.1 chapter 3) to a `PacketReader`
and checks the `RemoteProtocolError` and its `rule`. Statements about a connection's state
(first packet must be CONNECT, client identifier policy, ...) are the session's and are
tested there.
"""

from __future__ import annotations

import pytest

from gateway.mqtt import ConnectReturnCode, PacketTooLarge, RemoteProtocolError
from gateway.mqtt.codec import PacketReader

MQTT = b"\x00\x04MQTT"


def frame(first_byte: int, body: bytes) -> bytes:
    assert len(body) < 128
    return bytes((first_byte, len(body))) + body


def connect_bytes(flags: int, payload: bytes, *, name: bytes = MQTT, level: int = 4) -> bytes:
    return frame(0x10, name + bytes((level, flags)) + b"\x00\x3c" + payload)


def violation(wire: bytes) -> RemoteProtocolError:
    """The error the reader raises for `wire`, fed at once and byte by byte."""
    errors = []
    for chunks in ([wire], [wire[i : i + 1] for i in range(len(wire))]):
        reader = PacketReader()
        with pytest.raises(RemoteProtocolError) as caught:
            for chunk in chunks:
                reader.feed(chunk)
                while reader.next_packet() is not None:
                    pass
        errors.append(caught.value)
    assert (errors[0].rule, str(errors[0])) == (errors[1].rule, str(errors[1]))
    return errors[0]


# --------------------------------------------------------------------------- section 2


@pytest.mark.parametrize("first_byte", [0x00, 0x0F, 0xF0, 0xFF])
def test_reserved_packet_types_0_and_15_are_protocol_violations(first_byte: int) -> None:
    assert "reserved control packet type" in str(violation(bytes((first_byte, 0))))


@pytest.mark.parametrize(
    "wire",
    [
        b"\x11" + connect_bytes(0x02, b"\x00\x00")[1:],  # CONNECT
        b"\x21\x02\x00\x00",  # CONNACK
        b"\x48\x02\x00\x01",  # PUBACK
        b"\x52\x02\x00\x01",  # PUBREC
        b"\x74\x02\x00\x01",  # PUBCOMP
        b"\x98\x03\x00\x01\x00",  # SUBACK
        b"\xb1\x02\x00\x01",  # UNSUBACK
        b"\xc2\x00",  # PINGREQ
        b"\xdf\x00",  # PINGRESP
    ],
)
def test_MQTT_2_2_2_2_invalid_fixed_header_flags_are_a_protocol_violation(wire: bytes) -> None:
    assert violation(wire).rule == "MQTT-2.2.2-2"


@pytest.mark.parametrize(
    "wire",
    [
        b"\x32\x05\x00\x01t\x00\x00",  # PUBLISH QoS 1
        b"\x34\x05\x00\x01t\x00\x00",  # PUBLISH QoS 2
        b"\x40\x02\x00\x00",  # PUBACK
        b"\x50\x02\x00\x00",  # PUBREC
        b"\x62\x02\x00\x00",  # PUBREL
        b"\x70\x02\x00\x00",  # PUBCOMP
        b"\x82\x06\x00\x00\x00\x01a\x00",  # SUBSCRIBE
        b"\x90\x03\x00\x00\x00",  # SUBACK
        b"\xa2\x05\x00\x00\x00\x01a",  # UNSUBSCRIBE
        b"\xb0\x02\x00\x00",  # UNSUBACK
    ],
)
def test_MQTT_2_3_1_1_packet_identifier_zero_is_a_protocol_violation(wire: bytes) -> None:
    assert violation(wire).rule == "MQTT-2.3.1-1"


def test_remaining_length_of_five_bytes_is_a_protocol_violation() -> None:
    assert "more than 4 bytes" in str(violation(b"\x30\x80\x80\x80\x80\x01"))


# --------------------------------------------------------------------------- CONNECT 3.1


@pytest.mark.parametrize("name", [b"\x00\x06MQIsdp", b"\x00\x04mqtt", b"\x00\x04MQTX", b"\x00\x00"])
def test_MQTT_3_1_2_1_wrong_protocol_name_closes_without_connack(name: bytes) -> None:
    error = violation(connect_bytes(0x02, b"\x00\x00", name=name))
    assert error.rule == "MQTT-3.1.2-1"
    assert error.connack_code is None


@pytest.mark.parametrize("level", [0, 3, 6, 255])
def test_MQTT_3_1_2_2_unsupported_protocol_level_answers_connack_0x01(level: int) -> None:
    error = violation(connect_bytes(0x02, b"\x00\x00", level=level))
    assert error.rule == "MQTT-3.1.2-2"
    assert error.connack_code == ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION


def test_MQTT_3_1_2_2_level_is_refused_before_the_rest_is_parsed() -> None:
    # A level-6 CONNECT shaped like a 5 one (with properties) is refused on its level alone;
    # the same bytes at level 5 are an MQTT 5 CONNECT: the level decides.
    body = b"\x02\x00\x3c\x00\x00\x00"
    level6 = frame(0x10, MQTT + b"\x06" + body)
    assert violation(level6).connack_code == ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION
    reader = PacketReader()
    reader.feed(frame(0x10, MQTT + b"\x05" + body))
    packet = reader.next_packet()
    assert packet is not None and packet.protocol_level == 5
    assert reader.protocol_level == 5


def test_MQTT_3_1_2_3_connect_reserved_flag_is_a_protocol_violation() -> None:
    assert violation(connect_bytes(0x03, b"\x00\x00")).rule == "MQTT-3.1.2-3"


def test_MQTT_3_1_2_9_will_flag_without_will_fields_is_a_protocol_violation() -> None:
    assert violation(connect_bytes(0x06, b"\x00\x01c")).rule == "MQTT-3.1.2-9"
    assert violation(connect_bytes(0x06, b"\x00\x01c\x00\x01w")).rule == "MQTT-3.1.2-9"


def test_MQTT_3_1_2_11_will_fields_without_will_flag_are_a_protocol_violation() -> None:
    payload = b"\x00\x01c" + b"\x00\x01w" + b"\x00\x01m"
    assert violation(connect_bytes(0x02, payload)).rule == "MQTT-3.1.2-11"


@pytest.mark.parametrize("flags", [0x0A, 0x12, 0x1A])  # will QoS 1, 2 or 3, will flag 0
def test_MQTT_3_1_2_13_will_qos_without_will_flag_is_a_protocol_violation(flags: int) -> None:
    assert violation(connect_bytes(flags, b"\x00\x01c")).rule == "MQTT-3.1.2-13"


def test_MQTT_3_1_2_14_will_qos_3_is_a_protocol_violation() -> None:
    payload = b"\x00\x01c" + b"\x00\x01w" + b"\x00\x01m"
    assert violation(connect_bytes(0x1E, payload)).rule == "MQTT-3.1.2-14"


def test_MQTT_3_1_2_15_will_retain_without_will_flag_is_a_protocol_violation() -> None:
    assert violation(connect_bytes(0x22, b"\x00\x01c")).rule == "MQTT-3.1.2-15"


def test_MQTT_3_1_2_18_username_without_its_flag_is_a_protocol_violation() -> None:
    payload = b"\x00\x01c" + b"\x00\x01w" + b"\x00\x01m" + b"\x00\x01u"
    assert violation(connect_bytes(0x06, payload)).rule == "MQTT-3.1.2-18"


def test_MQTT_3_1_2_19_username_flag_without_username_is_a_protocol_violation() -> None:
    assert violation(connect_bytes(0x82, b"\x00\x01c")).rule == "MQTT-3.1.2-19"


def test_MQTT_3_1_2_20_password_without_its_flag_is_a_protocol_violation() -> None:
    payload = b"\x00\x01c" + b"\x00\x01u" + b"\x00\x02pw"
    assert violation(connect_bytes(0x82, payload)).rule == "MQTT-3.1.2-20"


def test_MQTT_3_1_2_21_password_flag_without_password_is_a_protocol_violation() -> None:
    assert violation(connect_bytes(0xC2, b"\x00\x01c\x00\x01u")).rule == "MQTT-3.1.2-21"


def test_MQTT_3_1_2_22_password_without_username_is_a_protocol_violation() -> None:
    assert violation(connect_bytes(0x42, b"\x00\x01c\x00\x02pw")).rule == "MQTT-3.1.2-22"


def test_MQTT_3_1_3_3_connect_without_client_identifier_is_a_protocol_violation() -> None:
    assert violation(connect_bytes(0x02, b"")).rule == "MQTT-3.1.3-3"


@pytest.mark.parametrize(
    ("flags", "payload"),
    [
        (0x02, b"\x00\x01\xff"),  # MQTT-3.1.3-4: client identifier
        (0x06, b"\x00\x01c\x00\x01\xc0\x00\x00"),  # MQTT-3.1.3-10: will topic
        (0x82, b"\x00\x01c\x00\x02\xed\xa0"),  # MQTT-3.1.3-11: user name (a cut surrogate)
    ],
)
def test_MQTT_3_1_3_4_10_11_connect_strings_must_be_well_formed_utf8(
    flags: int, payload: bytes
) -> None:
    assert violation(connect_bytes(flags, payload)).rule == "MQTT-1.5.3-1"


def test_will_topic_with_a_wildcard_is_a_protocol_violation() -> None:
    payload = b"\x00\x01c" + b"\x00\x03a/#" + b"\x00\x00"
    assert violation(connect_bytes(0x06, payload)).rule == "MQTT-3.3.2-2"


def test_connect_with_a_truncated_variable_header_is_a_protocol_violation() -> None:
    for cut in range(0, 10):
        violation(frame(0x10, (MQTT + b"\x04\x02\x00\x3c")[:cut]))


# --------------------------------------------------------------------------- CONNACK 3.2


def test_MQTT_3_2_2_4_refusing_connack_with_session_present_is_a_protocol_violation() -> None:
    assert violation(b"\x20\x02\x01\x05").rule == "MQTT-3.2.2-4"


@pytest.mark.parametrize(
    "wire", [b"\x20\x02\x02\x00", b"\x20\x02\x00\x06", b"\x20\x03\x00\x00\x00"]
)
def test_connack_reserved_bits_codes_or_length_are_protocol_violations(wire: bytes) -> None:
    violation(wire)


# --------------------------------------------------------------------------- PUBLISH 3.3


@pytest.mark.parametrize("first_byte", [0x38, 0x39])
def test_MQTT_3_3_1_2_qos_0_publish_with_dup_is_a_protocol_violation(first_byte: int) -> None:
    assert violation(frame(first_byte, b"\x00\x01tpayload")).rule == "MQTT-3.3.1-2"


@pytest.mark.parametrize("first_byte", [0x36, 0x37, 0x3E, 0x3F])
def test_MQTT_3_3_1_4_publish_qos_3_is_a_protocol_violation(first_byte: int) -> None:
    assert violation(frame(first_byte, b"\x00\x01t\x00\x01")).rule == "MQTT-3.3.1-4"


@pytest.mark.parametrize("topic", [b"\xff", b"\xed\xa0\x80", b"a\xc0\xafb"])
def test_MQTT_3_3_2_1_publish_topic_must_be_well_formed_utf8(topic: bytes) -> None:
    wire = frame(0x30, len(topic).to_bytes(2, "big") + topic + b"x")
    assert violation(wire).rule == "MQTT-1.5.3-1"


@pytest.mark.parametrize("topic", [b"a/+", b"#", b"a/#", b"+", b"a+b", b"sport#"])
def test_MQTT_3_3_2_2_publish_topic_with_wildcards_is_a_protocol_violation(topic: bytes) -> None:
    for first_byte, packet_id in ((0x30, b""), (0x32, b"\x00\x01")):
        wire = frame(first_byte, len(topic).to_bytes(2, "big") + topic + packet_id)
        assert violation(wire).rule == "MQTT-3.3.2-2"


def test_MQTT_4_7_3_1_publish_with_empty_topic_is_a_protocol_violation() -> None:
    assert violation(b"\x30\x03\x00\x00x").rule == "MQTT-4.7.3-1"


def test_MQTT_4_7_3_2_publish_topic_with_null_character_is_a_protocol_violation() -> None:
    assert violation(b"\x30\x04\x00\x02a\x00").rule == "MQTT-1.5.3-2"


@pytest.mark.parametrize(
    "wire",
    [
        b"\x30\x00",  # no topic length
        b"\x30\x01\x00",  # half a topic length
        b"\x30\x03\x00\x05a",  # topic longer than the packet
        b"\x32\x04\x00\x01t\x00",  # QoS 1 cut inside the packet identifier
        b"\x34\x03\x00\x01t",  # QoS 2 without a packet identifier
    ],
)
def test_publish_shorter_than_its_fields_is_a_protocol_violation(wire: bytes) -> None:
    violation(wire)


# --------------------------------------------------------------------------- acks 3.4 - 3.7


def test_MQTT_3_6_1_1_pubrel_flags_must_be_0010() -> None:
    assert violation(b"\x60\x02\x00\x01").rule == "MQTT-3.6.1-1"
    assert violation(b"\x63\x02\x00\x01").rule == "MQTT-3.6.1-1"


@pytest.mark.parametrize("first_byte", [0x40, 0x50, 0x62, 0x70, 0xB0])
@pytest.mark.parametrize("body", [b"", b"\x00", b"\x00\x01\x00"])
def test_acknowledgement_remaining_length_must_be_2(first_byte: int, body: bytes) -> None:
    assert "not 2" in str(violation(frame(first_byte, body)))


@pytest.mark.parametrize("first_byte", [0xC0, 0xD0, 0xE0])
def test_pingreq_pingresp_disconnect_remaining_length_must_be_0(first_byte: int) -> None:
    assert "not 0" in str(violation(frame(first_byte, b"\x00")))


# --------------------------------------------------------------------------- SUBSCRIBE 3.8


def test_MQTT_3_8_1_1_subscribe_flags_must_be_0010() -> None:
    assert violation(b"\x80\x06\x00\x01\x00\x01a\x00").rule == "MQTT-3.8.1-1"


def test_MQTT_3_8_3_1_subscribe_filters_must_be_well_formed_utf8() -> None:
    assert violation(b"\x82\x06\x00\x01\x00\x01\xfe\x00").rule == "MQTT-1.5.3-1"


def test_MQTT_3_8_3_3_subscribe_without_a_filter_is_a_protocol_violation() -> None:
    assert violation(b"\x82\x02\x00\x01").rule == "MQTT-3.8.3-3"


@pytest.mark.parametrize("requested", [0x03, 0x04, 0x80, 0xFC, 0xFF])
def test_MQTT_3_8_3_4_subscribe_reserved_bits_or_qos_3_are_a_protocol_violation(
    requested: int,
) -> None:
    wire = b"\x82\x06\x00\x01\x00\x01a" + bytes((requested,))
    assert violation(wire).rule == "MQTT-3.8.3-4"


def test_subscribe_filter_without_requested_qos_is_a_protocol_violation() -> None:
    violation(b"\x82\x05\x00\x01\x00\x01a")


@pytest.mark.parametrize(
    ("topic_filter", "rule"),
    [
        (b"a/#/b", "MQTT-4.7.1-2"),
        (b"a#", "MQTT-4.7.1-2"),
        (b"#/", "MQTT-4.7.1-2"),
        (b"a/b+", "MQTT-4.7.1-3"),
        (b"+a/b", "MQTT-4.7.1-3"),
        (b"", "MQTT-4.7.3-1"),
    ],
)
def test_MQTT_4_7_1_subscribe_with_misplaced_wildcards_is_a_protocol_violation(
    topic_filter: bytes, rule: str
) -> None:
    body = b"\x00\x01" + len(topic_filter).to_bytes(2, "big") + topic_filter + b"\x00"
    assert violation(frame(0x82, body)).rule == rule


# --------------------------------------------------------------------------- SUBACK 3.9


@pytest.mark.parametrize("code", [0x03, 0x7F, 0x81, 0xFF])
def test_MQTT_3_9_3_2_suback_reserved_return_codes_are_a_protocol_violation(code: int) -> None:
    assert violation(b"\x90\x03\x00\x01" + bytes((code,))).rule == "MQTT-3.9.3-2"


def test_suback_without_a_return_code_is_a_protocol_violation() -> None:
    violation(b"\x90\x02\x00\x01")


# --------------------------------------------------------------------------- UNSUBSCRIBE 3.10


def test_MQTT_3_10_1_1_unsubscribe_flags_must_be_0010() -> None:
    assert violation(b"\xa0\x05\x00\x01\x00\x01a").rule == "MQTT-3.10.1-1"


def test_MQTT_3_10_3_1_unsubscribe_filters_must_be_well_formed_utf8() -> None:
    assert violation(b"\xa2\x05\x00\x01\x00\x01\x80").rule == "MQTT-1.5.3-1"


def test_MQTT_3_10_3_2_unsubscribe_without_a_filter_is_a_protocol_violation() -> None:
    assert violation(b"\xa2\x02\x00\x01").rule == "MQTT-3.10.3-2"


def test_MQTT_4_7_1_2_unsubscribe_with_misplaced_hash_is_a_protocol_violation() -> None:
    assert violation(b"\xa2\x07\x00\x01\x00\x03#/a").rule == "MQTT-4.7.1-2"


def test_unsubscribe_cut_inside_a_filter_is_a_protocol_violation() -> None:
    violation(b"\xa2\x05\x00\x01\x00\x05a")


# --------------------------------------------------------------------------- DISCONNECT 3.14


def test_MQTT_3_14_1_1_disconnect_reserved_bits_must_be_zero() -> None:
    assert violation(b"\xe1\x00").rule == "MQTT-3.14.1-1"


# --------------------------------------------------------------------------- size limit


def test_packet_too_large_is_refused_from_the_fixed_header_alone() -> None:
    reader = PacketReader(max_packet_size=1024)
    reader.feed(b"\x30\xff\xff\xff\x7f")  # announces 256 MB and sends none of it
    with pytest.raises(PacketTooLarge):
        reader.next_packet()
    assert reader.buffered == 0
