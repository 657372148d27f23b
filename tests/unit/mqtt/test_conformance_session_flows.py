"""MQTT 3.1.1 normative statements that bind a server, checked on `ServerConnection`:
sections 3.3 to 4.8 (PUBLISH and the QoS flows, SUBSCRIBE, UNSUBSCRIBE, PING, DISCONNECT,
operational behaviour).

One test per statement, named after its number; docs/mqtt-conformance.md maps every
statement to its test. Packets travel as real bytes through our codec, between the
server and `SansIOClient`; malformed ones are built by hand.
"""

from __future__ import annotations

import pytest
from sansio_client import (
    SansIOClient,
    connected_pair,
    drain,
    flush,
    pump,
    raw,
    utf8,
    violation_after_connect,
)

from gateway.mqtt import (
    SUBACK_FAILURE,
    ConnAck,
    Connect,
    ConnectionState,
    DeliveryComplete,
    Disconnected,
    LocalProtocolError,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PublishReceived,
    PubRec,
    PubRel,
    QoS,
    RemoteProtocolError,
    ServerConnection,
    SubAck,
    UnsubAck,
    Will,
)
from gateway.mqtt.codec import decode, encode

Q0, Q1, Q2 = QoS.AT_MOST_ONCE, QoS.AT_LEAST_ONCE, QoS.EXACTLY_ONCE


# ------------------------------------------------------------------ 3.3 PUBLISH


def test_MQTT_3_3_1_1_redelivery_sets_dup():
    client, server = connected_pair(SansIOClient(clean_session=False))
    server.publish("t", b"1", Q1)
    server.publish("t", b"2", Q2)
    first = SansIOClient().receive_data(server.data_to_send())
    assert [p.dup for p in first] == [False, False]
    server2 = ServerConnection()
    server2.receive_data(encode(Connect("device-1", clean_session=False)), 1.0)
    drain(server2)
    server2.accept(session_present=True, resume=server.session_state())
    again = SansIOClient().receive_data(server2.data_to_send())[1:]
    assert [(p.payload, p.dup) for p in again] == [(b"1", True), (b"2", True)]


def test_MQTT_3_3_1_2_qos0_publish_with_dup_is_a_violation():
    violation_after_connect(raw(0x38, utf8("a") + b"x"), rule="MQTT-3.3.1-2")


def test_MQTT_3_3_1_3_outgoing_dup_does_not_copy_the_incoming_one():
    client, server = connected_pair()
    client.send(Publish("a", b"x", Q1, dup=True, packet_id=7))
    (event,) = pump(client, server)
    assert event.publish.dup
    server.publish(event.publish.topic, event.publish.payload, Q1)
    (out,) = flush(server, client)
    assert out.dup is False


def test_MQTT_3_3_1_4_qos_3_closes_the_connection():
    violation_after_connect(raw(0x36, utf8("a") + b"\x00\x01x"), rule="MQTT-3.3.1-4")


def test_MQTT_3_3_2_2_topic_name_with_wildcard_closes_the_connection():
    violation_after_connect(raw(0x30, utf8("a/+") + b"x"), rule="MQTT-3.3.2-2")
    violation_after_connect(raw(0x30, utf8("a/#") + b"x"), rule="MQTT-3.3.2-2")


@pytest.mark.parametrize("qos, answer", [(Q0, None), (Q1, PubAck), (Q2, PubRec)])
def test_MQTT_3_3_4_1_publish_is_answered_according_to_its_qos(qos, answer):
    client, server = connected_pair()
    packet_id = client.publish("a", b"x", qos)
    (event,) = pump(client, server)
    assert event == PublishReceived(Publish("a", b"x", qos, packet_id=packet_id))
    assert server.data_to_send() == b""  # nothing before the application took it over
    if answer is None:
        with pytest.raises(LocalProtocolError):
            server.acknowledge(1)
        return
    server.acknowledge(packet_id)
    assert flush(server, client) == [answer(packet_id)]


def test_MQTT_3_3_5_2_unauthorised_publish_gets_positive_ack_or_close():
    client, server = connected_pair()
    client.publish("forbidden", b"x", Q1)
    (event,) = pump(client, server)
    server.acknowledge(event.publish.packet_id)  # positive acknowledgement, message dropped
    assert flush(server, client) == [PubAck(event.publish.packet_id)]
    client.publish("forbidden", b"y", Q1)
    pump(client, server)
    server.close()  # or close the connection
    assert server.state is ConnectionState.CLOSED


# ------------------------------------------------------------------ 3.6 - 3.14


def test_MQTT_3_6_1_1_pubrel_with_wrong_flags_closes_the_connection():
    violation_after_connect(bytes((0x60, 2, 0, 1)), rule="MQTT-3.6.1-1")


def test_MQTT_3_8_1_1_subscribe_with_wrong_flags_closes_the_connection():
    violation_after_connect(raw(0x80, b"\x00\x01" + utf8("a") + b"\x00"), rule="MQTT-3.8.1-1")


def test_MQTT_3_8_3_1_subscribe_filters_must_be_utf8():
    violation_after_connect(raw(0x82, b"\x00\x01" + utf8(b"\xc0\xaf") + b"\x00"))


def test_MQTT_3_8_3_3_subscribe_without_filters_is_a_violation():
    violation_after_connect(raw(0x82, b"\x00\x01"), rule="MQTT-3.8.3-3")


def test_MQTT_3_8_3_4_subscribe_reserved_bits_or_qos_3_close_the_connection():
    violation_after_connect(raw(0x82, b"\x00\x01" + utf8("a") + b"\x03"), rule="MQTT-3.8.3-4")
    violation_after_connect(raw(0x82, b"\x00\x01" + utf8("a") + b"\x04"), rule="MQTT-3.8.3-4")


def test_MQTT_3_8_4_1_subscribe_is_answered_with_suback():
    client, server = connected_pair()
    packet_id = client.subscribe(("a", Q0))
    (event,) = pump(client, server)
    server.grant(event.packet_id, [0])
    assert flush(server, client) == [SubAck(packet_id, (0,))]


def test_MQTT_3_8_4_2_suback_has_the_subscribe_identifier():
    client, server = connected_pair()
    ids = [client.subscribe((f"t/{i}", Q1)) for i in range(3)]
    events = pump(client, server)
    for event in reversed(events):  # answered out of order: each keeps its own id
        server.grant(event.packet_id, [1])
    assert [a.packet_id for a in flush(server, client)] == list(reversed(ids))


def test_MQTT_3_8_4_4_many_filters_get_one_suback():
    client, server = connected_pair()
    packet_id = client.subscribe(("a", Q0), ("b", Q1), ("c", Q2))
    (event,) = pump(client, server)
    server.grant(packet_id, [0, 1, 2])
    assert flush(server, client) == [SubAck(packet_id, (0, 1, 2))]


def test_MQTT_3_8_4_5_suback_has_one_return_code_per_filter():
    client, server = connected_pair()
    packet_id = client.subscribe(("a", Q1), ("b", Q1))
    pump(client, server)
    with pytest.raises(LocalProtocolError):
        server.grant(packet_id, [1])
    with pytest.raises(LocalProtocolError):
        server.grant(packet_id, [1, 1, 1])
    server.grant(packet_id, [1, SUBACK_FAILURE])
    assert flush(server, client) == [SubAck(packet_id, (1, SUBACK_FAILURE))]


def test_MQTT_3_8_4_6_granted_qos_never_exceeds_the_request():
    client, server = connected_pair()
    packet_id = client.subscribe(("a", Q1))
    pump(client, server)
    with pytest.raises(LocalProtocolError):
        server.grant(packet_id, [2])
    server.grant(packet_id, [0])  # a lower grant is allowed
    assert flush(server, client) == [SubAck(packet_id, (0,))]


def test_MQTT_3_9_3_1_return_codes_follow_filter_order():
    client, server = connected_pair()
    packet_id = client.subscribe(("x", Q2), ("y", Q0), ("z", Q1))
    (event,) = pump(client, server)
    assert [f for f, _ in event.subscriptions] == ["x", "y", "z"]
    server.grant(packet_id, [2, 0, SUBACK_FAILURE])
    assert flush(server, client)[0].return_codes == (2, 0, SUBACK_FAILURE)


def test_MQTT_3_9_3_2_reserved_suback_codes_are_never_sent():
    client, server = connected_pair()
    packet_id = client.subscribe(("x", Q2))
    pump(client, server)
    for code in (3, 0x7F, 0x81):
        with pytest.raises(LocalProtocolError):
            server.grant(packet_id, [code])
    assert server.data_to_send() == b""


def test_MQTT_3_10_1_1_unsubscribe_with_wrong_flags_closes_the_connection():
    violation_after_connect(raw(0xA0, b"\x00\x01" + utf8("a")), rule="MQTT-3.10.1-1")


def test_MQTT_3_10_3_1_unsubscribe_filters_must_be_utf8():
    violation_after_connect(raw(0xA2, b"\x00\x01" + utf8(b"a\x00")))


def test_MQTT_3_10_3_2_unsubscribe_without_filters_is_a_violation():
    violation_after_connect(raw(0xA2, b"\x00\x01"), rule="MQTT-3.10.3-2")


def test_MQTT_3_10_4_3_unsubscribe_does_not_abort_messages_in_flight():
    client, server = connected_pair()
    client.subscribe(("a", Q2))
    (sub,) = pump(client, server)
    server.grant(sub.packet_id, [2])
    packet_id = server.publish("a", b"x", Q2)
    client.receive_data(server.data_to_send())  # client answers PUBREC
    client.unsubscribe("a")
    events = pump(client, server)
    server.unsubscribed(events[0].packet_id)
    flush(server, client)  # PUBREL and UNSUBACK
    assert pump(client, server) == [DeliveryComplete(packet_id)]


def test_MQTT_3_10_4_4_unsubscribe_is_answered_with_unsuback_of_same_id():
    client, server = connected_pair()
    packet_id = client.unsubscribe("a", "b/+")
    (event,) = pump(client, server)
    server.unsubscribed(event.packet_id)
    assert flush(server, client) == [UnsubAck(packet_id)]


def test_MQTT_3_10_4_5_unsuback_even_when_nothing_was_subscribed():
    client, server = connected_pair()
    packet_id = client.unsubscribe("never/subscribed")
    pump(client, server)
    server.unsubscribed(packet_id)  # the session does not require a matching subscription
    assert flush(server, client) == [UnsubAck(packet_id)]


def test_MQTT_3_10_4_6_many_filters_get_one_unsuback():
    client, server = connected_pair()
    packet_id = client.unsubscribe("a", "b", "c")
    (event,) = pump(client, server)
    assert event.topic_filters == ("a", "b", "c")
    server.unsubscribed(packet_id)
    with pytest.raises(LocalProtocolError):
        server.unsubscribed(packet_id)
    assert flush(server, client) == [UnsubAck(packet_id)]


def test_MQTT_3_12_4_1_pingreq_is_answered_with_pingresp():
    client, server = connected_pair()
    client.ping()
    client.ping()
    assert pump(client, server) == []
    assert client.pingresps == 2


def test_MQTT_3_14_1_1_disconnect_with_reserved_bits_closes_the_connection():
    violation_after_connect(bytes((0xE1, 0)), rule="MQTT-3.14.1-1")


def test_MQTT_3_14_4_3_disconnect_means_the_will_is_discarded():
    client, server = connected_pair(SansIOClient(will=Will("status", b"offline")))
    client.disconnect()
    assert pump(client, server) == [Disconnected(graceful=True)]
    assert server.state is ConnectionState.CLOSED
    server.receive_data(encode(PingReq()), 2.0)  # anything after DISCONNECT is ignored
    server.receive_data(b"", 2.0)
    assert server.next_event() is None
    assert server.data_to_send() == b""


# ------------------------------------------------------------------ 4 operational behaviour


def test_MQTT_4_1_0_1_session_state_survives_the_connection():
    client, server = connected_pair(SansIOClient(clean_session=False))
    q1 = server.publish("t", b"1", Q1)
    q2 = server.publish("t", b"2", Q2)
    flush(server, client)  # client PUBACKs q1 and PUBRECs q2 ...
    client.data_to_send()  # ... but those answers are lost with the connection
    client.publish("in", b"3", Q2)
    (event,) = pump(client, server)
    server.acknowledge(event.publish.packet_id)
    server.close()
    state = server.session_state()
    assert [p.packet_id for p in state.outbound] == [q1, q2]
    assert state.inbound_awaiting_pubrel == {event.publish.packet_id}


def test_MQTT_4_1_0_2_session_lasts_as_long_as_the_connection():
    client, server = connected_pair()
    packet_id = server.publish("t", b"1", Q1)
    server.data_to_send()  # the PUBLISH is still on its way
    for i in range(3):
        server.receive_data(encode(PingReq()), float(i))
        assert drain(server) == []
    assert [p.packet_id for p in server.session_state().outbound] == [packet_id]


def test_MQTT_4_3_1_1_qos0_is_sent_with_qos0_and_dup0():
    client, server = connected_pair()
    assert server.publish("t", b"x", Q0) is None
    assert server.data_to_send() == raw(0x30, utf8("t") + b"x")


def test_MQTT_4_3_2_1_qos1_sender_holds_the_message_until_puback():
    client, server = connected_pair()
    packet_id = server.publish("t", b"x", Q1)
    (sent,) = SansIOClient().receive_data(server.data_to_send())
    assert (sent.qos, sent.dup, sent.packet_id) == (Q1, False, packet_id)
    assert server.statistics().outbound_inflight == 1
    server.receive_data(encode(PubAck(packet_id)), 1.0)
    assert drain(server) == [DeliveryComplete(packet_id)]
    assert server.statistics().outbound_inflight == 0


def test_MQTT_4_3_2_2_qos1_receiver_acks_then_treats_same_id_as_new():
    client, server = connected_pair()
    client.send(Publish("t", b"1", Q1, packet_id=5))
    (e1,) = pump(client, server)
    server.acknowledge(5)
    assert flush(server, client) == [PubAck(5)]
    client.send(Publish("t", b"2", Q1, packet_id=5))
    (e2,) = pump(client, server)
    assert e2.publish.payload == b"2"


def test_MQTT_4_3_3_1_qos2_sender_releases_on_pubrec_and_never_resends_the_publish():
    client, server = connected_pair(SansIOClient(clean_session=False))
    packet_id = server.publish("t", b"x", Q2)
    server.data_to_send()
    server.receive_data(encode(PubRec(packet_id)), 1.0)
    assert drain(server) == []
    assert decode(server.data_to_send()) == PubRel(packet_id)
    state = server.session_state()
    assert state.outbound == (PubRel(packet_id),)  # a resume re-sends PUBREL, not PUBLISH
    server.receive_data(encode(PubComp(packet_id)), 2.0)
    assert drain(server) == [DeliveryComplete(packet_id)]


def test_MQTT_4_3_3_2_qos2_receiver_delivers_once_and_completes_on_pubrel():
    client, server = connected_pair()
    publish = Publish("t", b"x", Q2, packet_id=9)
    client.send(publish)
    client.send(Publish("t", b"x", Q2, dup=True, packet_id=9))  # before our PUBREC
    assert pump(client, server) == [PublishReceived(publish)]
    server.acknowledge(9)
    client.send(Publish("t", b"x", Q2, dup=True, packet_id=9))  # after it
    server.receive_data(client.data_to_send(), 1.0)
    assert drain(server) == []
    assert SansIOClient().receive_data(server.data_to_send()) == [PubRec(9), PubRec(9)]
    server.receive_data(encode(PubRel(9)), 2.0)
    assert drain(server) == []
    assert decode(server.data_to_send()) == PubComp(9)
    client.send(Publish("t", b"new", Q2, packet_id=9))  # after PUBCOMP: a new message
    assert [e.publish.payload for e in pump(client, server)] == [b"new"]


def test_MQTT_4_4_0_1_resumed_session_resends_publish_and_pubrel_with_original_ids():
    client, server = connected_pair(SansIOClient(clean_session=False))
    a = server.publish("t", b"a", Q1)
    b = server.publish("t", b"b", Q2)
    c = server.publish("t", b"c", Q2)
    server.data_to_send()
    server.receive_data(encode(PubRec(b)), 1.0)
    drain(server)
    server.receive_data(b"", 2.0)
    drain(server)
    fresh = SansIOClient(clean_session=False)
    c2, s2 = connected_pair(fresh, session_present=True, resume=server.session_state())
    resent = c2.received[1:]
    assert [type(p).__name__ for p in resent] == ["Publish", "PubRel", "Publish"]
    assert [p.packet_id for p in resent] == [a, b, c]


def test_MQTT_4_6_0_1_resent_publishes_keep_their_original_order():
    client, server = connected_pair(SansIOClient(clean_session=False))
    ids = [server.publish("t", bytes([i]), Q1 if i % 2 else Q2) for i in range(6)]
    server.close()
    c2, s2 = connected_pair(
        SansIOClient(clean_session=False), session_present=True, resume=server.session_state()
    )
    assert [p.packet_id for p in c2.received[1:]] == ids


def test_MQTT_4_6_0_2_pubacks_follow_the_order_of_acknowledgement():
    client, server = connected_pair()
    ids = [client.publish("t", bytes([i]), Q1) for i in range(4)]
    events = pump(client, server)
    for event in events:
        server.acknowledge(event.publish.packet_id)
    assert flush(server, client) == [PubAck(i) for i in ids]


def test_MQTT_4_6_0_3_pubrecs_follow_the_order_of_acknowledgement():
    client, server = connected_pair()
    ids = [client.publish("t", bytes([i]), Q2) for i in range(4)]
    for event in pump(client, server):
        server.acknowledge(event.publish.packet_id)
    assert [p for p in flush(server, client) if isinstance(p, PubRec)] == [PubRec(i) for i in ids]


def test_MQTT_4_6_0_4_pubrels_follow_the_order_of_pubrecs():
    client, server = connected_pair()
    ids = [server.publish("t", bytes([i]), Q2) for i in range(4)]
    server.data_to_send()
    for packet_id in reversed(ids):
        server.receive_data(encode(PubRec(packet_id)), 1.0)
    drain(server)
    got = SansIOClient().receive_data(server.data_to_send())
    assert got == [PubRel(i) for i in reversed(ids)]


def test_MQTT_4_6_0_6_publishes_leave_in_the_order_they_were_made():
    client, server = connected_pair()
    for i in range(10):
        server.publish("t", bytes([i]), (Q0, Q1, Q2)[i % 3])
    flush(server, client)
    assert [p.payload for p in client.delivered] == [bytes([i]) for i in range(10)]


def test_MQTT_4_8_0_1_protocol_violation_closes_for_good():
    client, server = connected_pair()
    server.receive_data(encode(ConnAck()), 1.0)  # a packet a server never receives
    with pytest.raises(RemoteProtocolError) as first:
        drain(server)
    assert first.value.rule == "MQTT-4.8.0-1"
    assert server.state is ConnectionState.ERROR
    with pytest.raises(RemoteProtocolError) as again:
        server.next_event()
    assert again.value is first.value
    server.receive_data(encode(PingReq()), 2.0)  # discarded
    assert server.data_to_send() == b""
    for packet in (SubAck(1, (0,)), UnsubAck(1), PingResp()):
        violation_after_connect(encode(packet), rule="MQTT-4.8.0-1")
