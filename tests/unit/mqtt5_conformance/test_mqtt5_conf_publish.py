"""MQTT 5.0 normative statements of section 3.3 (PUBLISH), checked on `ServerConnection`
with real bytes. One test per statement; docs/mqtt5-conformance.md maps them."""

from __future__ import annotations

import pytest
from sansio_client import (
    Q0,
    Q1,
    Q2,
    SansIOClient5,
    connected_pair5,
    drain,
    flush,
    prop_list,
    props,
    pump,
    raw,
    utf8,
    violation_after_connect5,
)

from gateway.mqtt import (
    LocalProtocolError,
    PingResp,
    PubAck,
    Publish,
    PubRec,
    SubAck,
)

MALFORMED = 0x81
PROTOCOL_ERROR = 0x82
ALIASES = {"topic_alias_maximum": 10}


def publish5(topic: bytes, properties: bytes = b"\x00", first: int = 0x30,
             packet_id: bytes = b"", payload: bytes = b"x") -> bytes:
    """An MQTT 5 PUBLISH built by hand."""
    return raw(first, utf8(topic) + packet_id + properties + payload)


def alias(value: int) -> bytes:
    return b"\x23" + value.to_bytes(2, "big")


def test_MQTT_3_3_1_1_redelivery_sets_dup():
    client, server = connected_pair5(SansIOClient5(clean_start=False, auto_ack=False))
    packet_id = server.publish("t", b"x", Q1)
    (first,) = flush(server, client)
    assert first.dup is False
    client.new_connection()
    client2, server2 = connected_pair5(client, session_present=True, resume=server.session_state())
    (again,) = [p for p in client2.received if isinstance(p, Publish)]
    assert (again.packet_id, again.dup) == (packet_id, True)


def test_MQTT_3_3_1_2_qos0_with_dup_is_malformed():
    violation_after_connect5(publish5(b"a", first=0x38), reason=MALFORMED)
    client, server = connected_pair5()
    server.publish("t", b"x", Q0)
    (packet,) = flush(server, client)
    assert packet.dup is False


def test_MQTT_3_3_1_3_outgoing_dup_does_not_copy_the_incoming_one():
    client, server = connected_pair5()
    client.send(Publish("t", b"x", Q1, dup=True, packet_id=7))
    (event,) = pump(client, server)
    assert event.publish.dup is True
    server.publish(event.publish.topic, event.publish.payload, Q1)
    outgoing = [p for p in flush(server, client) if isinstance(p, Publish)]
    assert [p.dup for p in outgoing] == [False]


def test_MQTT_3_3_1_4_qos_3_is_malformed():
    violation_after_connect5(publish5(b"a", first=0x36, packet_id=b"\x00\x01"), reason=MALFORMED)


def test_MQTT_3_3_2_1_topic_name_must_be_utf8():
    violation_after_connect5(publish5(b"a/\xc3"), reason=MALFORMED)
    violation_after_connect5(raw(0x30, b"\x00"), reason=MALFORMED)  # no room for a topic


def test_MQTT_3_3_2_2_topic_name_with_wildcard_is_refused():
    for topic in (b"a/+", b"#", b"a/#", b"+"):
        violation_after_connect5(publish5(topic))
    client, server = connected_pair5()
    with pytest.raises(LocalProtocolError):
        server.publish("a/+", b"x", Q0)
    assert server.data_to_send() == b""


def test_MQTT_3_3_2_4_15_16_17_18_20_message_properties_pass_unaltered():
    message = props(
        payload_format_indicator=1,
        message_expiry_interval=120,
        content_type="application/json; charset=utf-8",
        response_topic="replies/device-1/\u00e9",
        correlation_data=b"\x00\xffcorrelation",
        user_properties=(("z", "1"), ("a", "2"), ("z", "0"), ("", "")),
    )
    client, server = connected_pair5()
    client.publish("t", b"{}", Q1, properties=message)
    (event,) = pump(client, server)
    assert event.publish.properties == message
    # forwarded to a subscriber: the same properties, the same order
    subscriber, out = connected_pair5(SansIOClient5("sub"))
    out.publish("t", b"{}", Q1, properties=event.publish.properties)
    flush(out, subscriber)
    assert [p.properties for p in subscriber.delivered] == [message]


def test_MQTT_3_3_2_6_message_expiry_interval_is_sent_as_given():
    client, server = connected_pair5()
    server.publish("t", b"x", Q1, properties=props(message_expiry_interval=42))
    server.publish("t", b"y", Q0)
    flush(server, client)
    assert [p.properties.message_expiry_interval for p in client.delivered] == [42, None]


def test_MQTT_3_3_2_7_topic_aliases_do_not_survive_the_connection():
    client, server = connected_pair5(**ALIASES)
    server.receive_data(publish5(b"a/b", prop_list(alias(3))), 0.0)
    server.receive_data(publish5(b"", prop_list(alias(3))), 0.0)
    assert [e.publish.topic for e in drain(server)] == ["a/b", "a/b"]
    # the server's aliases do not survive either: a re-sent message carries its topic
    sub = SansIOClient5(clean_start=False, auto_ack=False,
                        properties=props(topic_alias_maximum=5))
    sub, out = connected_pair5(sub)
    ids = [out.publish("x/y", b"%d" % i, Q1) for i in range(3)]
    flush(out, sub)
    assert {p.properties.topic_alias for p in sub.received if isinstance(p, Publish)} != {None}
    sub.new_connection()  # the client forgets the aliases as it must
    sub, out2 = connected_pair5(sub, session_present=True, resume=out.session_state())
    again = [p for p in sub.received if isinstance(p, Publish)]
    assert [(p.packet_id, p.topic) for p in again] == [(i, "x/y") for i in ids]
    # a new connection of the same client: alias 3 means nothing there
    violation_after_connect5(publish5(b"", prop_list(alias(3))), reason=PROTOCOL_ERROR,
                            client=SansIOClient5(clean_start=False), **ALIASES)


def test_MQTT_3_3_2_8_topic_alias_0_is_refused_and_never_sent():
    violation_after_connect5(publish5(b"a", prop_list(alias(0))), reason=PROTOCOL_ERROR, **ALIASES)
    client, server = connected_pair5(SansIOClient5(properties=props(topic_alias_maximum=3)))
    for topic in ["a", "b", "c", "d", "a", "b"] * 4:
        server.publish(topic, b"x", Q0)
    flush(server, client)
    assert 0 not in {p.properties.topic_alias for p in client.received if isinstance(p, Publish)}


def test_MQTT_3_3_2_12_every_alias_up_to_the_maximum_is_accepted():
    client, server = connected_pair5(topic_alias_maximum=5)
    for value in range(1, 6):
        server.receive_data(publish5(b"t/%d" % value, prop_list(alias(value))), 0.0)
    for value in range(5, 0, -1):
        server.receive_data(publish5(b"", prop_list(alias(value))), 0.0)
    server.receive_data(publish5(b"new", prop_list(alias(1))), 0.0)  # re-pointed
    server.receive_data(publish5(b"", prop_list(alias(1))), 0.0)
    topics = [e.publish.topic for e in drain(server)]
    assert topics == ["t/1", "t/2", "t/3", "t/4", "t/5", "t/5", "t/4", "t/3", "t/2", "t/1",
                      "new", "new"]


def test_MQTT_3_3_2_13_response_topic_must_be_utf8():
    bad = prop_list(b"\x08" + utf8(b"replies/\xff"))
    violation_after_connect5(publish5(b"a", bad), reason=MALFORMED)


def test_MQTT_3_3_2_14_response_topic_with_wildcard_is_refused():
    for topic in (b"replies/#", b"replies/+/x"):
        violation_after_connect5(publish5(b"a", prop_list(b"\x08" + utf8(topic))),
                                reason=PROTOCOL_ERROR)
    client, server = connected_pair5()  # and the server never forwards one
    with pytest.raises(LocalProtocolError):
        server.publish("t", b"x", Q1, properties=props(response_topic="replies/#"))
    assert server.data_to_send() == b""
    assert server.session_state().outbound == ()


def test_MQTT_3_3_2_19_content_type_must_be_utf8():
    bad = prop_list(b"\x03" + utf8(b"text/\xed\xa0\x80"))
    violation_after_connect5(publish5(b"a", bad), reason=MALFORMED)


def test_MQTT_3_3_4_1_publish_is_answered_according_to_its_qos():
    client, server = connected_pair5()
    client.publish("t", b"0", Q0)
    client.publish("t", b"1", Q1)
    client.publish("t", b"2", Q2)
    events = pump(client, server)
    assert client.received == [client.connacks[0]]  # nothing before the application acts
    for event in events:
        if event.publish.qos:
            server.acknowledge(event.publish.packet_id)
    assert [type(p) for p in flush(server, client)] == [PubAck, PubRec]


def test_MQTT_3_3_4_3_4_5_subscription_identifiers_are_sent_as_given():
    client, server = connected_pair5()
    server.publish("t", b"one copy", Q1, properties=props(subscription_identifiers=(3, 7, 3)))
    server.publish("t", b"copy a", Q0, properties=props(subscription_identifiers=(3,)))
    server.publish("t", b"copy b", Q0, properties=props(subscription_identifiers=(7,)))
    flush(server, client)
    assert [p.properties.subscription_identifiers for p in client.delivered] == [
        (3, 7, 3), (3,), (7,)]


def test_MQTT_3_3_4_6_subscription_identifier_from_a_client_is_a_protocol_error():
    violation_after_connect5(publish5(b"a", prop_list(b"\x0b\x05")), reason=PROTOCOL_ERROR)


def test_MQTT_3_3_4_7_client_over_receive_maximum_gets_disconnect_0x93():
    client, server = connected_pair5(max_inbound_inflight=2)
    assert client.connacks[0].properties.receive_maximum == 2
    flood = b"".join(publish5(b"t", first=0x32, packet_id=bytes((0, i))) for i in (1, 2, 3))
    violation_after_connect5(flood, reason=0x93, max_inbound_inflight=2)


def test_MQTT_3_3_4_9_server_respects_the_client_receive_maximum():
    client = SansIOClient5(properties=props(receive_maximum=2), auto_ack=False)
    client, server = connected_pair5(client, max_inflight=20)
    first = [server.publish("t", b"%d" % i, Q1) for i in range(2)]
    assert not server.can_publish(Q1) and not server.can_publish(Q2)
    with pytest.raises(LocalProtocolError):
        server.publish("t", b"third", Q2)
    assert server.can_publish(Q0)
    flush(server, client)
    client.send(PubAck(first[0]))
    pump(client, server)
    assert server.can_publish(Q1)
    server.publish("t", b"third", Q2)
    assert not server.can_publish(Q1)
    flush(server, client)
    assert [p.payload for p in client.delivered] == [b"0", b"1", b"third"]


def test_MQTT_3_3_4_9_resumed_session_respects_the_new_receive_maximum():
    client, server = connected_pair5(SansIOClient5(clean_start=False, auto_ack=False))
    ids = [server.publish("t", b"%d" % i, Q1) for i in range(5)]
    flush(server, client)
    # the device comes back with a smaller Receive Maximum: 2 unacknowledged at a time
    again = SansIOClient5(clean_start=False, auto_ack=False, properties=props(receive_maximum=2))
    again, server2 = connected_pair5(again, session_present=True, resume=server.session_state())
    resent = [p.packet_id for p in again.received if isinstance(p, Publish)]
    assert resent == ids[:2]
    again.send(PubAck(ids[0]))
    pump(again, server2)
    resent = [p.packet_id for p in again.received if isinstance(p, Publish)]
    assert resent == ids[:3]
    assert not server2.can_publish(Q1)  # the held ones still fill the quota
    for packet_id in ids[1:]:
        again.send(PubAck(packet_id))
        pump(again, server2)
    resent = [p.packet_id for p in again.received if isinstance(p, Publish)]
    assert resent == ids and server2.session_state().outbound == ()
    assert server2.can_publish(Q1)


def test_MQTT_3_3_4_10_other_packets_flow_while_the_quota_is_spent():
    client = SansIOClient5(properties=props(receive_maximum=1), auto_ack=False)
    client, server = connected_pair5(client)
    server.publish("t", b"x", Q1)
    assert not server.can_publish(Q1)
    client.ping()
    sub_id = client.subscribe(("a", Q1))
    client.publish("in", b"y", Q1)
    sub, pub = pump(client, server)
    server.grant(sub_id, [1])
    server.acknowledge(pub.publish.packet_id)
    server.publish("t", b"qos0", Q0)
    got = [type(p) for p in flush(server, client)]
    assert got[-3:] == [SubAck, PubAck, Publish]
    assert PingResp in [type(p) for p in client.received]

