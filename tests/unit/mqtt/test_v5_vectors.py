"""MQTT 5.0 byte vectors: every packet type and every property, written out by hand from
the standard's layouts (OASIS MQTT 5.0, sections 1.5.5, 2.2.2 and chapter 3), decoded to
the expected value and that value encoded back to the same bytes."""

from __future__ import annotations

import pytest

from gateway.mqtt.codec import PacketReader, decode, encode
from gateway.mqtt.packets import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    QoS,
    RetainHandling,
    SubAck,
    Subscribe,
    SubscriptionOptions,
    UnsubAck,
    Unsubscribe,
    Will,
)
from gateway.mqtt.properties import (
    NO_PROPERTIES,
    SPEC,
    Properties,
    decode_properties,
    decode_varint,
    encode_properties,
)
from gateway.mqtt.wire import encode_varint

H = bytes.fromhex

PACKETS = [
    pytest.param(
        # 3.1: name, level 5, flags 0xEE (user, password, will retain, will QoS 1, will,
        # clean start), keep alive 10, properties (session expiry 10, receive maximum 20),
        # client id "c", will properties (will delay 5), will topic "w/t", will payload "x",
        # user name "u", password "p".
        H("102a 00044d515454 05 ee 000a 08 110000000a 210014 000163 05 1800000005"
          " 0003772f74 000178 000175 000170"),
        Connect("c", True, 10,
                Will("w/t", b"x", QoS.AT_LEAST_ONCE, True, Properties(will_delay_interval=5)),
                "u", b"p", protocol_level=5,
                properties=Properties(session_expiry_interval=10, receive_maximum=20)),
        id="CONNECT",
    ),
    pytest.param(
        H("1011 00044d515454 05 40 0000 00 0000 000270 77"),  # password without user name
        Connect("", False, 0, None, None, b"pw", protocol_level=5),
        id="CONNECT-password-only",
    ),
    pytest.param(
        H("200a 00 00 07 1200017822 0003"),
        ConnAck(0, False, Properties(assigned_client_identifier="x", topic_alias_maximum=3)),
        id="CONNACK",
    ),
    pytest.param(H("2003 00 87 00"), ConnAck(0x87), id="CONNACK-refused"),
    pytest.param(
        H("3219 0003612f62 0007 0f 020000003c 230001 2600016b000176 706c"),
        Publish("a/b", b"pl", QoS.AT_LEAST_ONCE, packet_id=7, properties=Properties(
            message_expiry_interval=60, topic_alias=1, user_properties=(("k", "v"),))),
        id="PUBLISH",
    ),
    pytest.param(H("3008 0000 03 230001 706c"),
                 Publish("", b"pl", properties=Properties(topic_alias=1)), id="PUBLISH-alias"),
    pytest.param(H("3004 000161 00"), Publish("a", b""), id="PUBLISH-bare"),
    pytest.param(H("4002 0001"), PubAck(1), id="PUBACK-short"),
    pytest.param(H("4003 0001 10"), PubAck(1, 0x10), id="PUBACK-reason"),
    pytest.param(H("4009 0002 80 05 1f00026e6f"),
                 PubAck(2, 0x80, Properties(reason_string="no")), id="PUBACK-full"),
    pytest.param(H("5003 0003 99"), PubRec(3, 0x99), id="PUBREC"),
    pytest.param(H("6203 0004 92"), PubRel(4, 0x92), id="PUBREL"),
    pytest.param(H("7002 0005"), PubComp(5), id="PUBCOMP"),
    pytest.param(
        H("8218 0001 02 0b05 0003612f23 2d 000a2473686172652f672f78 00"),
        Subscribe(1, (("a/#", QoS.AT_LEAST_ONCE), ("$share/g/x", QoS.AT_MOST_ONCE)),
                  (SubscriptionOptions(True, True, RetainHandling.DO_NOT_SEND),
                   SubscriptionOptions()),
                  Properties(subscription_identifiers=(5,))),
        id="SUBSCRIBE",
    ),
    pytest.param(H("9005 0001 00 01 8f"), SubAck(1, (1, 0x8F)), id="SUBACK"),
    pytest.param(H("a206 0002 00 000161"), Unsubscribe(2, ("a",)), id="UNSUBSCRIBE"),
    pytest.param(H("b009 0002 04 1f000172 00 11"),
                 UnsubAck(2, (0, 0x11), Properties(reason_string="r")), id="UNSUBACK"),
    pytest.param(H("c000"), PingReq(), id="PINGREQ"),
    pytest.param(H("d000"), PingResp(), id="PINGRESP"),
    pytest.param(H("e000"), Disconnect(), id="DISCONNECT-short"),
    pytest.param(H("e001 8e"), Disconnect(0x8E), id="DISCONNECT-reason"),
    pytest.param(H("e007 04 05 1100000000"),
                 Disconnect(0x04, Properties(session_expiry_interval=0)), id="DISCONNECT-full"),
    pytest.param(H("f000"), Auth(), id="AUTH-short"),
    pytest.param(H("f00a 18 08 1500016d 16000164"),
                 Auth(0x18, Properties(authentication_method="m", authentication_data=b"d")),
                 id="AUTH"),
]


@pytest.mark.parametrize(("wire", "packet"), PACKETS)
def test_every_mqtt5_packet_decodes_from_its_bytes_and_encodes_back(wire, packet) -> None:
    assert decode(wire, protocol_level=5) == packet
    assert encode(packet, protocol_level=5) == wire


@pytest.mark.parametrize(("wire", "packet"), PACKETS)
def test_every_mqtt5_packet_decodes_fed_byte_by_byte(wire, packet) -> None:
    reader = PacketReader(protocol_level=5)
    got = []
    for i in range(len(wire)):
        reader.feed(wire[i : i + 1])
        while (decoded := reader.next_packet()) is not None:
            got.append(decoded)
    assert got == [packet]


# One vector per property (section 2.2.2.2, table 2-4), in a packet kind that allows it.
PROPERTIES = [
    ("PUBLISH", "0101", Properties(payload_format_indicator=1)),
    ("PUBLISH", "020000003c", Properties(message_expiry_interval=60)),
    ("PUBLISH", "03000474657874", Properties(content_type="text")),
    ("PUBLISH", "080003722f74", Properties(response_topic="r/t")),
    ("PUBLISH", "0900020102", Properties(correlation_data=b"\x01\x02")),
    ("PUBLISH", "0b010b8001", Properties(subscription_identifiers=(1, 128))),
    ("CONNECT", "11ffffffff", Properties(session_expiry_interval=0xFFFFFFFF)),
    ("CONNACK", "1200026964", Properties(assigned_client_identifier="id")),
    ("CONNACK", "13003c", Properties(server_keep_alive=60)),
    ("AUTH", "1500016d", Properties(authentication_method="m")),
    ("AUTH", "16000164", Properties(authentication_data=b"d")),
    ("CONNECT", "1700", Properties(request_problem_information=0)),
    ("WILL", "180000000a", Properties(will_delay_interval=10)),
    ("CONNECT", "1901", Properties(request_response_information=1)),
    ("CONNACK", "1a000169", Properties(response_information="i")),
    ("DISCONNECT", "1c000173", Properties(server_reference="s")),
    ("PUBACK", "1f000172", Properties(reason_string="r")),
    ("CONNECT", "21ffff", Properties(receive_maximum=0xFFFF)),
    ("CONNACK", "22000a", Properties(topic_alias_maximum=10)),
    ("PUBLISH", "230005", Properties(topic_alias=5)),
    ("CONNACK", "2401", Properties(maximum_qos=1)),
    ("CONNACK", "2500", Properties(retain_available=0)),
    ("SUBSCRIBE", "260001610001622600016100016" "3",
     Properties(user_properties=(("a", "b"), ("a", "c")))),
    ("CONNECT", "2700000100", Properties(maximum_packet_size=256)),
    ("CONNACK", "2800", Properties(wildcard_subscription_available=0)),
    ("CONNACK", "2901", Properties(subscription_identifier_available=1)),
    ("CONNACK", "2a00", Properties(shared_subscription_available=0)),
]


def test_the_property_vectors_cover_every_property() -> None:
    assert {int(H(hexa)[0]) for _, hexa, _ in PROPERTIES} == set(SPEC)


@pytest.mark.parametrize(("kind", "hexa", "value"), PROPERTIES,
                         ids=[f"{h[:2]}-{k}" for k, h, _ in PROPERTIES])
def test_every_property_decodes_and_encodes(kind: str, hexa: str, value: Properties) -> None:
    body = H(hexa)
    wire = bytes((len(body),)) + body
    assert decode_properties(wire, 0, kind) == (value, len(wire))
    out = bytearray()
    encode_properties(value, kind, out)
    assert bytes(out) == wire


def test_no_properties_is_one_zero_byte() -> None:
    out = bytearray()
    encode_properties(NO_PROPERTIES, "PUBLISH", out)
    assert out == b"\x00"
    assert decode_properties(b"\x00", 0, "PUBLISH") == (NO_PROPERTIES, 1)


# Section 1.5.5, table 1-1: the edges of each Variable Byte Integer size.
VARINTS = [(0, "00"), (127, "7f"), (128, "8001"), (16_383, "ff7f"), (16_384, "808001"),
           (2_097_151, "ffff7f"), (2_097_152, "80808001"), (268_435_455, "ffffff7f")]


@pytest.mark.parametrize(("value", "hexa"), VARINTS)
def test_variable_byte_integers_match_table_1_1(value: int, hexa: str) -> None:
    out = bytearray()
    encode_varint(value, out)
    assert out.hex() == hexa
    assert decode_varint(H(hexa), 0) == (value, len(H(hexa)))
