"""MQTT 3.1.1 normative statements that bind a server, checked on `ServerConnection`:
sections 1.5 to 3.2 (strings, packet format, CONNECT, CONNACK); 3.3 on are in
test_conformance_session_flows.py.

One test per statement, named after its number; docs/mqtt-conformance.md maps every
statement to its test. Packets travel as real bytes through our codec, between the
server and `SansIOClient`; malformed ones are built by hand.
"""

from __future__ import annotations

import pytest
from sansio_client import (
    SansIOClient,
    connect_bytes,
    connected_pair,
    drain,
    flush,
    pump,
    raw,
    refused_before_connack,
    utf8,
    violation_after_connect,
)

from gateway.mqtt import (
    ConnAck,
    Connect,
    ConnectionState,
    ConnectReceived,
    ConnectReturnCode,
    Disconnected,
    LocalProtocolError,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    PubRec,
    PubRel,
    QoS,
    RemoteProtocolError,
    ServerConnection,
    SubAck,
    SubscribeReceived,
    UnsubAck,
    UnsubscribeReceived,
    Will,
)
from gateway.mqtt.codec import decode, encode

Q0, Q1, Q2 = QoS.AT_MOST_ONCE, QoS.AT_LEAST_ONCE, QoS.EXACTLY_ONCE


# ------------------------------------------------------------------ 1.5.3 UTF-8 strings


def test_MQTT_1_5_3_1_ill_formed_utf8_closes_the_connection():
    refused_before_connack(connect_bytes(client_id=b"dev\xc3"))
    refused_before_connack(connect_bytes(client_id=b"\xed\xa0\x80"))  # U+D800 encoded
    violation_after_connect(raw(0x30, utf8(b"a/\xff") + b"x"))


def test_MQTT_1_5_3_2_null_character_closes_the_connection():
    refused_before_connack(connect_bytes(client_id=b"dev\x00ice"))
    violation_after_connect(raw(0x30, utf8(b"a/\x00b") + b"x"))


def test_MQTT_1_5_3_3_bom_is_kept_not_stripped():
    client, server = connected_pair()
    server.receive_data(raw(0x30, utf8("\ufeffa/b") + b"x"), 0.0)
    (event,) = drain(server)
    assert event.publish.topic == "\ufeffa/b"


# ------------------------------------------------------------------ 2.2.2 flags, 2.3.1 ids


def test_MQTT_2_2_2_2_invalid_fixed_header_flags_close_the_connection():
    violation_after_connect(bytes((0xC1, 0)))  # PINGREQ with a flag set
    violation_after_connect(bytes((0x41, 2, 0, 1)))  # PUBACK with a flag set
    refused_before_connack(bytes((0x11,)) + connect_bytes()[1:])


def test_MQTT_2_3_1_1_zero_packet_identifier_is_a_violation():
    violation_after_connect(raw(0x32, utf8("a") + b"\x00\x00x"), rule="MQTT-2.3.1-1")
    violation_after_connect(raw(0x82, b"\x00\x00" + utf8("a") + b"\x00"), rule="MQTT-2.3.1-1")


def test_MQTT_2_3_1_4_server_uses_unused_identifiers_and_keeps_them_on_resend():
    client, server = connected_pair(SansIOClient(clean_session=False))
    ids = [server.publish("t", b"%d" % i, Q1) for i in range(5)]
    assert len(set(ids)) == 5 and 0 not in ids
    assert [p.packet_id for p in flush(server, client)] == ids
    client.data_to_send()  # the client's PUBACKs are lost with the connection
    state = server.session_state()
    server2 = ServerConnection()
    server2.receive_data(encode(Connect("device-1", clean_session=False)), 1.0)
    drain(server2)
    server2.accept(session_present=True, resume=state)
    packets = SansIOClient(clean_session=False).receive_data(server2.data_to_send())
    assert [p.packet_id for p in packets[1:]] == ids
    assert all(p.dup for p in packets[1:])


def test_MQTT_2_3_1_6_acknowledgements_carry_the_publish_identifier():
    client, server = connected_pair()
    client.publish("t", b"1", Q1)
    client.publish("t", b"2", Q2)
    (e1, e2) = pump(client, server)
    server.acknowledge(e1.publish.packet_id)
    server.acknowledge(e2.publish.packet_id)
    got = flush(server, client)
    assert got == [PubAck(e1.publish.packet_id), PubRec(e2.publish.packet_id)]
    packet_id = server.publish("t", b"3", Q2)
    flush(server, client)  # client answers PUBREC
    pump(client, server)  # server answers PUBREL
    assert PubRel(packet_id) in client.received


def test_MQTT_2_3_1_7_suback_and_unsuback_carry_the_request_identifier():
    client, server = connected_pair()
    sub_id = client.subscribe(("a/#", Q1))
    unsub_id = client.unsubscribe("a/#")
    events = pump(client, server)
    assert events == [
        SubscribeReceived(sub_id, (("a/#", Q1),)),
        UnsubscribeReceived(unsub_id, ("a/#",)),
    ]
    server.grant(sub_id, [1])
    server.unsubscribed(unsub_id)
    assert flush(server, client) == [SubAck(sub_id, (1,)), UnsubAck(unsub_id)]


# ------------------------------------------------------------------ 3.1 CONNECT


def test_MQTT_3_1_0_1_first_packet_must_be_connect():
    refused_before_connack(encode(PingReq()), rule="MQTT-3.1.0-1")
    refused_before_connack(encode(Publish("a", b"x")), rule="MQTT-3.1.0-1")


def test_MQTT_3_1_0_2_second_connect_is_a_violation():
    violation_after_connect(encode(Connect("device-1")), rule="MQTT-3.1.0-2")


def test_MQTT_3_1_2_1_wrong_protocol_name_disconnects_without_connack():
    refused_before_connack(connect_bytes(name=b"MQIsdp", level=3), rule="MQTT-3.1.2-1")


def test_MQTT_3_1_2_2_unsupported_level_gets_connack_1_then_close():
    server = ServerConnection()
    server.receive_data(connect_bytes(level=6), 0.0)
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.rule == "MQTT-3.1.2-2"
    assert server.state is ConnectionState.ERROR
    assert decode(server.data_to_send()) == ConnAck(ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION)


def test_MQTT_3_1_2_3_reserved_connect_flag_disconnects():
    refused_before_connack(connect_bytes(flags=0x03), rule="MQTT-3.1.2-3")


def test_MQTT_3_1_2_4_persistent_session_resumes_its_state():
    client, server = connected_pair(SansIOClient(clean_session=False))
    packet_id = server.publish("t", b"kept", Q1)
    server.receive_data(b"", 1.0)
    assert drain(server) == [Disconnected(graceful=False)]
    client.new_connection()
    client2, server2 = connected_pair(client, session_present=True, resume=server.session_state())
    assert [p.packet_id for p in client2.received if isinstance(p, Publish)] == [packet_id]


def test_MQTT_3_1_2_6_clean_session_state_is_not_reused():
    client, server = connected_pair(SansIOClient(clean_session=True))
    state = server.session_state()
    server2 = ServerConnection()
    server2.receive_data(encode(Connect("device-1", clean_session=True)), 0.0)
    drain(server2)
    with pytest.raises(LocalProtocolError):
        server2.accept(session_present=True, resume=state)
    with pytest.raises(LocalProtocolError):
        server2.accept(resume=state)
    assert server2.state is ConnectionState.CONNECT_RECEIVED


def test_MQTT_3_1_2_8_connection_lost_without_disconnect_signals_the_will():
    will = Will("status", b"offline", Q1, retain=True)
    client, server = connected_pair(SansIOClient(will=will))
    assert server.connect.will == will
    server.receive_data(b"", 1.0)
    assert drain(server) == [Disconnected(graceful=False)]


def test_MQTT_3_1_2_9_will_flag_requires_will_topic_and_message():
    refused_before_connack(connect_bytes(flags=0x06))  # will flag, payload ends at client id
    refused_before_connack(connect_bytes(flags=0x06, payload_tail=utf8("status")))


def test_MQTT_3_1_2_11_no_will_flag_means_no_will_fields():
    refused_before_connack(connect_bytes(flags=0x02, payload_tail=utf8("status") + utf8("x")))


def test_MQTT_3_1_2_12_no_will_flag_means_no_will_to_publish():
    client, server = connected_pair()
    assert server.connect.will is None


def test_MQTT_3_1_2_13_will_qos_without_will_flag_is_refused():
    refused_before_connack(connect_bytes(flags=0x02 | 0x08), rule="MQTT-3.1.2-13")


def test_MQTT_3_1_2_14_will_qos_3_is_refused():
    tail = utf8("status") + utf8("x")
    refused_before_connack(
        connect_bytes(flags=0x02 | 0x04 | 0x18, payload_tail=tail), rule="MQTT-3.1.2-14"
    )


def test_MQTT_3_1_2_15_will_retain_without_will_flag_is_refused():
    refused_before_connack(connect_bytes(flags=0x02 | 0x20), rule="MQTT-3.1.2-15")


def test_MQTT_3_1_2_18_no_username_flag_means_no_username():
    refused_before_connack(connect_bytes(flags=0x02, payload_tail=utf8("user")))


def test_MQTT_3_1_2_19_username_flag_requires_a_username():
    refused_before_connack(connect_bytes(flags=0x82))


def test_MQTT_3_1_2_20_no_password_flag_means_no_password():
    refused_before_connack(connect_bytes(flags=0x82, payload_tail=utf8("user") + utf8("pw")))


def test_MQTT_3_1_2_21_password_flag_requires_a_password():
    refused_before_connack(connect_bytes(flags=0xC2, payload_tail=utf8("user")))


def test_MQTT_3_1_2_22_password_without_username_is_refused():
    refused_before_connack(connect_bytes(flags=0x42, payload_tail=utf8("pw")), rule="MQTT-3.1.2-22")


def test_MQTT_3_1_2_24_keepalive_deadline_is_one_and_a_half_keepalives():
    client, server = connected_pair(SansIOClient(keepalive=60), now=100.0)
    assert server.keepalive_deadline() == 190.0
    client.ping()
    pump(client, server, now=150.0)
    assert server.keepalive_deadline() == 240.0
    client0, server0 = connected_pair(SansIOClient(keepalive=0))
    assert server0.keepalive_deadline() is None


def test_MQTT_3_1_3_1_payload_fields_in_order():
    connect = Connect("id", False, 30, Will("w", b"m", Q2, True), "user", b"pw")
    server = ServerConnection()
    server.receive_data(encode(connect), 0.0)
    assert drain(server) == [ConnectReceived(connect)]


def test_MQTT_3_1_3_3_client_identifier_must_be_present():
    body = utf8("MQTT") + bytes((4, 0x02)) + b"\x00\x00"
    refused_before_connack(raw(0x10, body))


def test_MQTT_3_1_3_5_server_allows_1_to_23_alphanumeric_client_ids():
    for client_id in ("a", "0123456789abcdefghijklm", "ZZZZZZZZZZZZZZZZZZZZZZZ"):
        client, server = connected_pair(SansIOClient(client_id, clean_session=False))
        assert server.connect.client_id == client_id


def test_MQTT_3_1_3_6_empty_client_id_with_clean_session_is_allowed():
    client, server = connected_pair(SansIOClient("", clean_session=True))
    assert server.state is ConnectionState.CONNECTED
    assert server.connect.client_id == ""  # the gateway assigns a unique one


def test_MQTT_3_1_3_8_empty_client_id_without_clean_session_gets_connack_2():
    server = ServerConnection()
    server.receive_data(encode(Connect("", clean_session=False)), 0.0)
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.rule == "MQTT-3.1.3-8"
    assert info.value.connack_code is ConnectReturnCode.IDENTIFIER_REJECTED
    assert server.state is ConnectionState.ERROR
    assert decode(server.data_to_send()) == ConnAck(ConnectReturnCode.IDENTIFIER_REJECTED)


def test_MQTT_3_1_3_9_rejected_client_id_gets_connack_2():
    server = ServerConnection(max_client_id_length=23)
    server.receive_data(encode(Connect("x" * 24)), 0.0)
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.rule == "MQTT-3.1.3-9"
    assert decode(server.data_to_send()) == ConnAck(ConnectReturnCode.IDENTIFIER_REJECTED)
    # and the application may reject one itself
    server = ServerConnection()
    server.receive_data(encode(Connect("someone-else")), 0.0)
    drain(server)
    server.refuse(ConnectReturnCode.IDENTIFIER_REJECTED)
    assert decode(server.data_to_send()) == ConnAck(ConnectReturnCode.IDENTIFIER_REJECTED)
    assert server.state is ConnectionState.CLOSED


def test_MQTT_3_1_4_1_malformed_connect_closes_without_connack():
    good = connect_bytes()
    refused_before_connack(good[:1] + bytes((good[1] + 1,)) + good[2:] + b"\x00")  # trailing byte
    refused_before_connack(connect_bytes(client_id=b"\xff"))


def test_MQTT_3_1_4_4_accepted_connect_gets_connack_0():
    server = ServerConnection()
    server.receive_data(encode(Connect("device-1")), 0.0)
    drain(server)
    server.accept()
    assert decode(server.data_to_send()) == ConnAck(ConnectReturnCode.ACCEPTED, False)
    assert server.state is ConnectionState.CONNECTED


def test_MQTT_3_1_4_5_nothing_after_a_refused_connect_is_processed():
    server = ServerConnection()
    pipelined = encode(Connect("device-1")) + encode(Publish("a", b"x", Q1, packet_id=1))
    server.receive_data(pipelined + encode(PingReq()), 0.0)
    (event,) = drain(server)
    assert isinstance(event, ConnectReceived)
    server.refuse(ConnectReturnCode.NOT_AUTHORIZED)
    assert server.next_event() is None
    server.receive_data(encode(PingReq()), 1.0)
    assert server.next_event() is None
    assert decode(server.data_to_send()) == ConnAck(ConnectReturnCode.NOT_AUTHORIZED)


def test_MQTT_3_2_0_1_first_packet_from_server_is_connack():
    server = ServerConnection()
    server.receive_data(encode(Connect("device-1")) + encode(PingReq()), 0.0)
    drain(server)
    assert server.data_to_send() == b""  # the pipelined PINGREQ waits for the decision
    with pytest.raises(LocalProtocolError):
        server.publish("a", b"x", Q0)
    with pytest.raises(LocalProtocolError):
        server.next_event()
    server.accept()
    assert server.next_event() is None
    client = SansIOClient()
    assert client.receive_data(server.data_to_send()) == [ConnAck(), PingResp()]


@pytest.mark.parametrize("clean_session", [True, False])
def test_MQTT_3_2_2_1_clean_session_gets_session_present_0(clean_session):
    client, server = connected_pair(SansIOClient(clean_session=clean_session))
    assert client.connacks == [ConnAck(ConnectReturnCode.ACCEPTED, False)]
    if clean_session:
        with pytest.raises(LocalProtocolError):
            fresh = ServerConnection()
            fresh.receive_data(encode(Connect("d", clean_session=True)), 0.0)
            drain(fresh)
            fresh.accept(session_present=True)


def test_MQTT_3_2_2_2_stored_session_gets_session_present_1():
    client, server = connected_pair(SansIOClient(clean_session=False), session_present=True)
    assert client.connacks == [ConnAck(ConnectReturnCode.ACCEPTED, True)]


def test_MQTT_3_2_2_3_no_stored_session_gets_session_present_0():
    client, server = connected_pair(SansIOClient(clean_session=False), session_present=False)
    assert client.connacks == [ConnAck(ConnectReturnCode.ACCEPTED, False)]


def test_MQTT_3_2_2_4_refusal_has_session_present_0():
    server = ServerConnection()
    server.receive_data(encode(Connect("device-1", clean_session=False)), 0.0)
    drain(server)
    server.refuse(ConnectReturnCode.BAD_USERNAME_OR_PASSWORD)
    assert server.data_to_send() == bytes((0x20, 2, 0, 4))


def test_MQTT_3_2_2_5_refusing_connack_closes_the_connection():
    server = ServerConnection()
    server.receive_data(encode(Connect("device-1")), 0.0)
    drain(server)
    server.refuse(ConnectReturnCode.SERVER_UNAVAILABLE)
    assert server.state is ConnectionState.CLOSED
    with pytest.raises(LocalProtocolError):
        server.publish("a", b"x", Q0)


def test_MQTT_3_2_2_6_no_applicable_code_closes_without_connack():
    server = ServerConnection()
    server.receive_data(encode(Connect("device-1")), 0.0)
    drain(server)
    server.close()
    assert server.state is ConnectionState.CLOSED
    assert server.data_to_send() == b""
    with pytest.raises(LocalProtocolError):
        server.refuse(ConnectReturnCode.SERVER_UNAVAILABLE)
