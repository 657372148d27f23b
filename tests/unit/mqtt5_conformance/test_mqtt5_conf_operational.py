"""MQTT 5.0 normative statements of chapter 4 (sessions, QoS flows, retries, ordering,
topics, shared subscription syntax, flow control), checked on `ServerConnection` with real
bytes and on the topic functions it uses. One test per statement;
docs/mqtt5-conformance.md maps them."""

from __future__ import annotations

import pytest
from sansio_client import (
    Q0,
    Q1,
    Q2,
    SansIOClient5,
    connected_pair5,
    drain,
    encode5,
    flush,
    props,
    pump,
    raw,
    utf8,
    violation_after_connect5,
)

from gateway.mqtt import (
    DeliveryComplete,
    Disconnected,
    LocalProtocolError,
    MQTTError,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    topic_matches,
    validate_topic_filter,
    validate_topic_name,
)


def subscribe5(topic_filter: bytes, options: int = 0, packet_id: int = 1) -> bytes:
    body = packet_id.to_bytes(2, "big") + b"\x00" + utf8(topic_filter) + bytes((options,))
    return raw(0x82, body)


def filter_refused(topic_filter: bytes) -> None:
    """A SUBSCRIBE with this filter closes the connection, or gets SUBACK 0x8F for it."""
    client, server = connected_pair5()
    server.receive_data(subscribe5(topic_filter), 1.0)
    try:
        events = drain(server)
    except MQTTError:
        return
    assert [type(e).__name__ for e in events] == [], f"{topic_filter!r} reached the application"
    (suback,) = flush(server, client)
    assert isinstance(suback, SubAck) and suback.return_codes == (0x8F,)


def filter_accepted(topic_filter: str) -> None:
    client, server = connected_pair5()
    client.subscribe((topic_filter, Q1))
    (event,) = pump(client, server)
    assert event.subscriptions == ((topic_filter, Q1),)


# ------------------------------------------------------------------ 4.1 session state


def test_MQTT_4_1_0_1_session_state_is_kept_while_connected():
    client, server = connected_pair5(SansIOClient5(clean_start=False, auto_ack=False))
    ids = [server.publish("t", b"%d" % i, q) for i, q in enumerate((Q1, Q2, Q1))]
    server.receive_data(encode5(Publish("in", b"x", Q2, packet_id=77)), 1.0)
    drain(server)
    server.acknowledge(77)  # PUBREC sent; the client's PUBREL has not come yet
    for now in (10.0, 1000.0, 100_000.0):
        server.receive_data(encode5(PingReq()), now)
        assert drain(server) == []
        state = server.session_state()
        assert [p.packet_id for p in state.outbound] == ids
        assert state.inbound_awaiting_pubrel == {77}


def test_MQTT_4_1_0_2_session_expiry_is_what_the_client_asked():
    client = SansIOClient5(clean_start=False, properties=props(session_expiry_interval=300))
    client, server = connected_pair5(client)
    assert server.connect.properties.session_expiry_interval == 300
    client.disconnect(0, props(session_expiry_interval=30))
    (event,) = pump(client, server)
    assert isinstance(event, Disconnected)
    assert event.properties.session_expiry_interval == 30  # the gateway expires it then


# ------------------------------------------------------------------ 4.3 QoS flows


def test_MQTT_4_3_1_1_qos0_is_sent_with_qos0_and_dup0():
    client, server = connected_pair5()
    assert server.publish("t", b"x", Q0) is None
    (packet,) = flush(server, client)
    assert (packet.qos, packet.dup, packet.packet_id) == (Q0, False, None)


def test_MQTT_4_3_2_1_2_3_qos1_sender_flow():
    client, server = connected_pair5(SansIOClient5(auto_ack=False))
    first = server.publish("t", b"1", Q1)
    second = server.publish("t", b"2", Q1)
    assert first != second
    packets = flush(server, client)
    assert [(p.qos, p.dup, p.packet_id) for p in packets] == [(Q1, False, first),
                                                              (Q1, False, second)]
    client.send(PubAck(first))
    assert pump(client, server) == [DeliveryComplete(first)]
    assert [p.packet_id for p in server.session_state().outbound] == [second]


def test_MQTT_4_3_2_4_5_qos1_receiver_flow():
    client, server = connected_pair5()
    client.send(Publish("t", b"x", Q1, packet_id=5))
    (event,) = pump(client, server)
    assert client.acks == []  # no PUBACK before the application owns the message
    server.acknowledge(5)
    assert flush(server, client) == [PubAck(5)]
    client.send(Publish("t", b"again", Q1, packet_id=5))
    client.send(Publish("t", b"dup", Q1, dup=True, packet_id=5))
    events = pump(client, server)
    # after the PUBACK both are new messages, whatever their DUP flag (at least once)
    assert [e.publish.payload for e in events] == [b"again", b"dup"]


def test_MQTT_4_3_3_1_to_6_qos2_sender_flow():
    client, server = connected_pair5(SansIOClient5(clean_start=False, auto_ack=False))
    packet_id = server.publish("t", b"x", Q2)
    (packet,) = flush(server, client)
    assert (packet.qos, packet.dup, packet.packet_id) == (Q2, False, packet_id)
    assert [type(p) for p in server.session_state().outbound] == [Publish]
    client.send(PubRec(packet_id))
    assert pump(client, server) == []
    assert client.received[-1] == PubRel(packet_id)
    assert server.session_state().outbound == (PubRel(packet_id),)
    # resumed before PUBCOMP: PUBREL again, never the PUBLISH
    client.new_connection()
    client2, server2 = connected_pair5(client, session_present=True, resume=server.session_state())
    assert [type(p) for p in client2.received[1:]] == [PubRel]
    client2.send(PubComp(packet_id))
    assert pump(client2, server2) == [DeliveryComplete(packet_id)]
    assert server2.session_state().outbound == ()


def test_MQTT_4_3_3_7_message_in_flight_is_resent_whatever_its_expiry():
    client, server = connected_pair5(SansIOClient5(clean_start=False, auto_ack=False))
    packet_id = server.publish("t", b"x", Q2, properties=props(message_expiry_interval=1))
    flush(server, client)
    server.receive_data(b"", 500.0)
    drain(server)
    client.new_connection()
    client2, server2 = connected_pair5(client, session_present=True,
                                      resume=server.session_state(), now=10_000.0)
    (again,) = [p for p in client2.received if isinstance(p, Publish)]
    assert (again.packet_id, again.dup) == (packet_id, True)
    assert again.properties.message_expiry_interval == 1


def test_MQTT_4_3_3_8_to_12_qos2_receiver_flow():
    client, server = connected_pair5()
    client.send(Publish("t", b"x", Q2, packet_id=9))
    (event,) = pump(client, server)
    assert client.acks == []
    server.acknowledge(9)
    client.send(Publish("t", b"x", Q2, dup=True, packet_id=9))  # re-sent before PUBREL
    assert pump(client, server) == []  # not delivered onward again
    assert [type(p) for p in client.received[1:]] == [PubRec, PubRec]
    client.data_to_send()  # one PUBREL will do
    client.send(PubRel(9))
    assert pump(client, server) == []
    assert client.received[-1] == PubComp(9)
    client.send(Publish("t", b"new", Q2, packet_id=9))
    (event,) = pump(client, server)
    assert event.publish.payload == b"new"


def test_MQTT_4_3_3_9_refused_pubrec_frees_the_identifier():
    client, server = connected_pair5()
    client.send(Publish("t", b"x", Q2, packet_id=3))
    (event,) = pump(client, server)
    server.acknowledge(3, 0x87)
    assert flush(server, client) == [PubRec(3, 0x87)]
    assert server.session_state().inbound_awaiting_pubrel == frozenset()
    client.send(Publish("t", b"retry", Q2, packet_id=3))
    (event,) = pump(client, server)
    assert event.publish.payload == b"retry"


def test_MQTT_4_3_3_13_qos2_exchange_completes_after_expiry():
    client, server = connected_pair5()
    client.send(Publish("t", b"x", Q2, packet_id=4, properties=props(message_expiry_interval=1)))
    (event,) = pump(client, server, now=0.0)
    server.acknowledge(4)  # the application may drop the expired message; the flow goes on
    flush(server, client)  # PUBREC; the client answers PUBREL
    pump(client, server, now=3600.0)
    assert client.received[-1] == PubComp(4)


# ------------------------------------------------------------------ 4.4 retries


def test_MQTT_4_4_0_1_resends_only_when_a_session_resumes():
    client, server = connected_pair5(SansIOClient5(clean_start=False, auto_ack=False))
    ids = [server.publish("t", b"%d" % i, Q1) for i in range(3)]
    flush(server, client)
    for now in (60.0, 600.0):
        client.ping()
        pump(client, server, now=now)
    assert [type(p) for p in client.received[4:]] == [PingResp, PingResp]  # no re-send
    client.new_connection()
    client2, _ = connected_pair5(client, session_present=True, resume=server.session_state())
    again = [p for p in client2.received if isinstance(p, Publish)]
    assert [(p.packet_id, p.dup) for p in again] == [(i, True) for i in ids]


def test_MQTT_4_4_0_2_failed_acknowledgement_ends_the_flow():
    client, server = connected_pair5(SansIOClient5(clean_start=False, auto_ack=False))
    q1 = server.publish("t", b"1", Q1)
    q2 = server.publish("t", b"2", Q2)
    flush(server, client)
    client.send(PubAck(q1, 0x80))
    client.send(PubRec(q2, 0x87))
    events = pump(client, server)
    assert [(e.packet_id, e.reason_code) for e in events] == [(q1, 0x80), (q2, 0x87)]
    assert not any(isinstance(p, PubRel) for p in client.received)
    assert server.session_state().outbound == ()


# ------------------------------------------------------------------ 4.6 ordering


def test_MQTT_4_6_0_1_resent_publishes_keep_their_order():
    client, server = connected_pair5(SansIOClient5(clean_start=False, auto_ack=False))
    ids = [server.publish("t", b"%d" % i, q) for i, q in enumerate((Q2, Q1, Q2, Q1))]
    flush(server, client)
    client.send(PubRec(ids[0]))  # the first becomes a PUBREL, keeping its place
    pump(client, server)
    client.new_connection()
    client2, _ = connected_pair5(client, session_present=True, resume=server.session_state())
    assert [p.packet_id for p in client2.received[1:]] == ids
    assert [type(p) for p in client2.received[1:]] == [PubRel, Publish, Publish, Publish]


def test_MQTT_4_6_0_2_3_acknowledgements_follow_the_order_of_acknowledge():
    client, server = connected_pair5()
    for i in range(1, 5):
        client.send(Publish("t", b"x", Q1 if i % 2 else Q2, packet_id=i))
    events = pump(client, server)
    for event in events:
        server.acknowledge(event.publish.packet_id)
    assert [(type(p), p.packet_id) for p in flush(server, client)] == [
        (PubAck, 1), (PubRec, 2), (PubAck, 3), (PubRec, 4)]


def test_MQTT_4_6_0_4_pubrels_follow_the_order_of_pubrecs():
    client, server = connected_pair5(SansIOClient5(auto_ack=False))
    ids = [server.publish("t", b"x", Q2) for _ in range(3)]
    flush(server, client)
    for packet_id in reversed(ids):
        client.send(PubRec(packet_id))
    pump(client, server)
    assert [p.packet_id for p in client.received if isinstance(p, PubRel)] == list(reversed(ids))


def test_MQTT_4_6_0_5_publishes_leave_in_the_order_they_were_made():
    client, server = connected_pair5()
    expected = []
    for i in range(12):
        qos = (Q0, Q1, Q2)[i % 3]
        server.publish(f"t/{i % 2}", b"%d" % i, qos)
        expected.append(b"%d" % i)
    flush(server, client)
    assert [p.payload for p in client.delivered] == expected


# ------------------------------------------------------------------ 4.7 topics


def test_MQTT_4_7_0_1_wildcards_are_refused_in_topic_names():
    for name in ("a/+", "#", "a/#/b", "+/x"):
        with pytest.raises(MQTTError):
            validate_topic_name(name)
        violation_after_connect5(raw(0x30, utf8(name) + b"\x00x"))
    filter_accepted("a/+/#")


def test_MQTT_4_7_1_1_hash_must_be_alone_and_last():
    for bad in (b"a/#/b", b"a#", b"#/a", b"a/b#"):
        filter_refused(bad)
    for good in ("#", "a/#", "a/b/#"):
        validate_topic_filter(good)
        filter_accepted(good)


def test_MQTT_4_7_1_2_plus_must_fill_its_level():
    for bad in (b"a+", b"a/+b", b"+a/b", b"a/b+/c"):
        filter_refused(bad)
    for good in ("+", "+/+", "a/+/c", "a/+"):
        filter_accepted(good)


def test_MQTT_4_7_2_1_wildcards_never_match_dollar_topics():
    assert not topic_matches("#", "$SYS/uptime")
    assert not topic_matches("+/uptime", "$SYS/uptime")
    assert not topic_matches("+", "$x")
    assert topic_matches("$SYS/#", "$SYS/uptime")
    assert topic_matches("a/#", "a/$b")


def test_MQTT_4_7_3_1_empty_topic_is_refused():
    violation_after_connect5(raw(0x30, utf8(b"") + b"\x00x"), reason=0x82)  # no alias either
    filter_refused(b"")
    with pytest.raises(MQTTError):
        validate_topic_name("")


def test_MQTT_4_7_3_2_null_character_in_topic_is_refused():
    violation_after_connect5(raw(0x30, utf8(b"a\x00") + b"\x00x"), reason=0x81)
    filter_refused(b"a/\x00/#")


def test_MQTT_4_7_3_3_topic_over_65535_bytes_is_refused():
    with pytest.raises(MQTTError):
        validate_topic_name("a" * 65_536)
    with pytest.raises(MQTTError):
        validate_topic_filter("a" * 65_536)
    client, server = connected_pair5()
    with pytest.raises(LocalProtocolError):
        server.publish("a" * 65_536, b"x", Q0)


def test_MQTT_4_7_3_4_matching_does_not_normalise():
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    assert not topic_matches(composed, decomposed)
    assert not topic_matches("A/b", "a/b")
    assert not topic_matches("a/b ", "a/b")
    client, server = connected_pair5()
    client.publish(decomposed, b"x")
    (event,) = pump(client, server)
    assert event.publish.topic == decomposed


# ------------------------------------------------------------------ 4.8 shared subscriptions


def test_MQTT_4_8_2_1_shared_filter_needs_a_share_name():
    filter_refused(b"$share//a/b")
    filter_refused(b"$share/")
    filter_accepted("$share/g/a/b")


def test_MQTT_4_8_2_2_share_name_rules():
    for bad in (b"$share/g+/a", b"$share/g#/a", b"$share/+/a", b"$share/g", b"$share/g/"):
        filter_refused(bad)
    for good in ("$share/g/#", "$share/g/+/x", "$share/group-1/a/b"):
        filter_accepted(good)


def test_MQTT_4_8_2_6_failed_acknowledgement_is_reported_with_its_reason():
    client, server = connected_pair5(SansIOClient5(auto_ack=False))
    packet_id = server.publish("t", b"x", Q1)
    flush(server, client)
    client.send(PubAck(packet_id, 0x97))
    (event,) = pump(client, server)
    assert event == DeliveryComplete(packet_id, 0x97, event.properties)
    assert event.reason_code >= 0x80  # the gateway discards it, no other member


# ------------------------------------------------------------------ 4.9 flow control


def test_MQTT_4_9_0_1_send_quota_starts_at_the_receive_maximum():
    for receive_maximum, window in ((3, 3), (None, 20), (65_535, 20)):
        client = SansIOClient5(properties=props(receive_maximum=receive_maximum), auto_ack=False)
        client, server = connected_pair5(client, max_inflight=20)
        sent = 0
        while server.can_publish(Q1):
            server.publish("t", b"x", Q1)
            sent += 1
        assert sent == window


def test_MQTT_4_9_0_2_no_qos1_publish_while_the_quota_is_zero():
    client = SansIOClient5(properties=props(receive_maximum=2), auto_ack=False)
    client, server = connected_pair5(client)
    server.publish("t", b"1", Q1)
    server.publish("t", b"2", Q2)
    for qos in (Q1, Q2):
        assert not server.can_publish(qos)
        with pytest.raises(LocalProtocolError):
            server.publish("t", b"over", qos)
    flush(server, client)
    assert len(client.delivered) == 2
    # a QoS 2 message holds its quota until PUBCOMP, not PUBREC (section 4.9)
    client = SansIOClient5(properties=props(receive_maximum=1), auto_ack=False)
    client, server = connected_pair5(client)
    packet_id = server.publish("t", b"x", Q2)
    flush(server, client)
    client.send(PubRec(packet_id))
    pump(client, server)  # PUBREL out; the client's PUBCOMP is not sent yet
    assert not server.can_publish(Q1)
    client.data_to_send()
    client.send(PubComp(packet_id))
    assert pump(client, server) == [DeliveryComplete(packet_id)]
    assert server.can_publish(Q1)


def test_MQTT_4_9_0_3_other_packets_are_processed_while_the_quota_is_zero():
    client = SansIOClient5(properties=props(receive_maximum=1), auto_ack=False)
    client, server = connected_pair5(client)
    server.publish("t", b"1", Q2)
    flush(server, client)
    client.ping()
    client.publish("in", b"x", Q1)
    unsub_id = client.unsubscribe("a")
    pub, unsub = pump(client, server)
    server.acknowledge(pub.publish.packet_id)
    server.unsubscribed(unsub_id)
    server.publish("t", b"q0", Q0)
    kinds = [type(p).__name__ for p in flush(server, client)]
    assert kinds == ["PubAck", "UnsubAck", "Publish"]
    assert client.pingresps == 1
