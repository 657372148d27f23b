"""MQTT 5.0 normative statements of sections 1.5 and 2 (data representation, packet
format, properties), checked on `ServerConnection` with real bytes.

One test per statement, named after its number; docs/mqtt5-conformance.md maps every
statement to its test.
"""

from __future__ import annotations

from sansio_client import (
    Q0,
    Q1,
    Q2,
    SansIOClient5,
    connect5_bytes,
    connected_pair5,
    drain,
    flush,
    prop_list,
    props,
    pump,
    raw,
    refused_before_connack,
    utf8,
    varint,
    violation_after_connect5,
)

from gateway.mqtt import PubAck, PubRec, PubRel, SubAck, UnsubAck

MALFORMED = 0x81


def publish5(topic: bytes, payload: bytes = b"x", properties: bytes = b"\x00") -> bytes:
    """A QoS 0 MQTT 5 PUBLISH built by hand."""
    return raw(0x30, utf8(topic) + properties + payload)


def user_property(key: bytes, value: bytes) -> bytes:
    return b"\x26" + utf8(key) + utf8(value)


# ------------------------------------------------------------------ 1.5 data representation


def test_MQTT_1_5_4_1_ill_formed_utf8_closes_the_connection():
    refused_before_connack(connect5_bytes(client_id=b"dev\xc3"), connack=MALFORMED)
    refused_before_connack(connect5_bytes(client_id=b"\xed\xa0\x80"), connack=MALFORMED)  # U+D800
    violation_after_connect5(publish5(b"a/\xff"), reason=MALFORMED)
    violation_after_connect5(publish5(b"a/\xed\xbf\xbf"), reason=MALFORMED)  # U+DFFF


def test_MQTT_1_5_4_2_null_character_closes_the_connection():
    refused_before_connack(connect5_bytes(client_id=b"dev\x00ice"), connack=MALFORMED)
    violation_after_connect5(publish5(b"a/\x00b"), reason=MALFORMED)


def test_MQTT_1_5_4_2_control_characters_are_refused_too():
    # 1.5.4: a string SHOULD NOT hold control characters; they would reach logs
    refused_before_connack(connect5_bytes(client_id=b"dev\x07"), connack=0x85)
    for topic in (b"a/\x1b[31m", b"a/\xc2\x85", b"a/\x7f"):
        violation_after_connect5(publish5(topic), reason=MALFORMED)


def test_MQTT_1_5_4_3_byte_order_mark_is_kept():
    client, server = connected_pair5()
    server.receive_data(publish5("\ufeffa/b".encode()), 0.0)
    (event,) = drain(server)
    assert event.publish.topic == "\ufeffa/b"
    user = prop_list(user_property("\ufeffk".encode(), "\ufeffv".encode()))
    server.receive_data(publish5(b"a", properties=user), 0.0)
    (event,) = drain(server)
    assert event.publish.properties.user_properties == (("\ufeffk", "\ufeffv"),)


def test_MQTT_1_5_5_1_variable_byte_integers_use_the_fewest_bytes():
    client, server = connected_pair5()
    for size in (0, 120, 121, 16_000, 16_500, 2_097_000, 2_098_000):
        server.publish("t", b"x" * size, Q0)
        data = server.data_to_send()
        body = utf8("t") + b"\x00" + b"x" * size
        assert data == bytes((0x30,)) + varint(len(body)) + body
        assert len(data) - len(body) - 1 == (1, 2, 3, 4)[(len(body).bit_length() - 1) // 7]
    server.publish("t", b"", Q0, properties=props(subscription_identifiers=(1, 128, 16_384)))
    expected_props = prop_list(b"\x0b\x01", b"\x0b\x80\x01", b"\x0b\x80\x80\x01")
    assert server.data_to_send() == raw(0x30, utf8("t") + expected_props)


def test_MQTT_1_5_7_1_user_property_strings_must_be_utf8():
    bad_key = prop_list(user_property(b"k\xff", b"v"))
    bad_value = prop_list(user_property(b"k", b"v\x00"))
    violation_after_connect5(publish5(b"a", properties=bad_key), reason=MALFORMED)
    violation_after_connect5(publish5(b"a", properties=bad_value), reason=MALFORMED)
    refused_before_connack(connect5_bytes(properties=bad_key), connack=MALFORMED)


# ------------------------------------------------------------------ 2 packet format


def test_MQTT_2_1_3_1_invalid_fixed_header_flags_are_malformed():
    violation_after_connect5(bytes((0xC1, 0)), reason=MALFORMED)  # PINGREQ with a flag
    violation_after_connect5(bytes((0x41, 2, 0, 1)), reason=MALFORMED)  # PUBACK with a flag
    violation_after_connect5(bytes((0xE2, 0)), reason=MALFORMED)  # DISCONNECT with a flag
    violation_after_connect5(bytes((0xF4, 0)), reason=MALFORMED)  # AUTH with a flag
    refused_before_connack(bytes((0x12,)) + connect5_bytes()[1:])


def test_MQTT_2_2_1_2_qos0_publish_carries_no_packet_identifier():
    client, server = connected_pair5()
    assert server.publish("t", b"payload", Q0) is None
    assert server.data_to_send() == raw(0x30, utf8("t") + b"\x00" + b"payload")


def test_MQTT_2_2_1_3_zero_packet_identifier_is_malformed():
    violation_after_connect5(raw(0x32, utf8("a") + b"\x00\x00" + b"\x00x"))  # PUBLISH QoS 1
    violation_after_connect5(raw(0x82, b"\x00\x00" + b"\x00" + utf8("a") + b"\x00"))  # SUBSCRIBE
    violation_after_connect5(raw(0xA2, b"\x00\x00" + b"\x00" + utf8("a")))  # UNSUBSCRIBE


def test_MQTT_2_2_1_4_server_uses_unused_non_zero_identifiers():
    client, server = connected_pair5(SansIOClient5(auto_ack=False))
    ids = [server.publish("t", b"%d" % i, Q1) for i in range(5)]
    assert len(set(ids)) == 5 and 0 not in ids
    flush(server, client)
    # The first is acknowledged: its id is free, the other four stay in use.
    client.send(PubAck(ids[0]))
    pump(client, server)
    more = [server.publish("t", b"more", Q2) for _ in range(10)]
    assert 0 not in more and len(set(more)) == 10
    assert not set(more) & set(ids[1:])


def test_MQTT_2_2_1_5_acknowledgements_carry_the_publish_identifier():
    client, server = connected_pair5()
    client.publish("t", b"1", Q1)
    client.publish("t", b"2", Q2)
    e1, e2 = pump(client, server)
    server.acknowledge(e1.publish.packet_id)
    server.acknowledge(e2.publish.packet_id)
    got = flush(server, client)
    assert [(type(p), p.packet_id) for p in got] == [
        (PubAck, e1.publish.packet_id),
        (PubRec, e2.publish.packet_id),
    ]
    packet_id = server.publish("t", b"3", Q2)
    flush(server, client)  # the client answers PUBREC
    pump(client, server)  # the server answers PUBREL
    assert [p.packet_id for p in client.received if isinstance(p, PubRel)] == [packet_id]


def test_MQTT_2_2_1_6_suback_and_unsuback_carry_the_request_identifier():
    client, server = connected_pair5()
    sub_id = client.subscribe(("a/#", Q1))
    unsub_id = client.unsubscribe("a/#")
    sub, unsub = pump(client, server)
    assert (sub.packet_id, unsub.packet_id) == (sub_id, unsub_id)
    server.grant(sub_id, [1])
    server.unsubscribed(unsub_id)
    got = flush(server, client)
    assert [(type(p), p.packet_id) for p in got] == [(SubAck, sub_id), (UnsubAck, unsub_id)]


def test_MQTT_2_2_2_1_no_properties_is_a_zero_property_length():
    client, server = connected_pair5()
    sub_id = client.subscribe(("a", Q0), ("b", Q1))
    unsub_id = client.unsubscribe("a")
    pump(client, server)
    server.publish("t", b"x", Q0)
    server.grant(sub_id, [0, 1])
    server.unsubscribed(unsub_id)
    assert server.data_to_send() == (
        raw(0x30, utf8("t") + b"\x00" + b"x")
        + raw(0x90, sub_id.to_bytes(2, "big") + b"\x00" + b"\x00\x01")
        + raw(0xB0, unsub_id.to_bytes(2, "big") + b"\x00" + b"\x00")
    )
