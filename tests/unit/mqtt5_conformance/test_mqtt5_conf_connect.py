"""MQTT 5.0 normative statements of section 3.1 (CONNECT), checked on `ServerConnection`
with real bytes. One test per statement; docs/mqtt5-conformance.md maps them."""

from __future__ import annotations

import pytest
from sansio_client import (
    Q0,
    Q1,
    Q2,
    SansIOClient5,
    connect5_bytes,
    connect_only5,
    connected_pair5,
    decode5,
    decode_all5,
    drain,
    encode5,
    flush,
    prop_list,
    props,
    pump,
    raw,
    refused_before_connack,
    split_packets,
    utf8,
    violation_after_connect5,
)

from gateway.mqtt import (
    ConnAck,
    ConnAckCode,
    Connect,
    ConnectionState,
    ConnectReceived,
    Disconnect,
    DisconnectCode,
    Disconnected,
    LocalProtocolError,
    PingReq,
    Publish,
    RemoteProtocolError,
    ServerConnection,
    Will,
)

MALFORMED = 0x81
PROTOCOL_ERROR = 0x82
WILL = 0x04
USER_NAME = 0x80
PASSWORD = 0x40
WILL_PAYLOAD = utf8("status") + utf8("offline")  # will topic and will payload


def test_MQTT_3_1_0_1_first_packet_must_be_connect():
    refused_before_connack(encode5(PingReq()), rule="MQTT-3.1.0-1")
    refused_before_connack(encode5(Publish("a", b"x")), rule="MQTT-3.1.0-1")


def test_MQTT_3_1_0_2_second_connect_is_a_protocol_error():
    second = encode5(Connect("device-1", protocol_level=5))
    violation_after_connect5(second, reason=PROTOCOL_ERROR, rule="MQTT-3.1.0-2")


def test_MQTT_3_1_2_1_wrong_protocol_name_closes():
    error = refused_before_connack(connect5_bytes(name=b"MQIsdp"), rule="MQTT-3.1.2-1")
    assert error.connack_code in (None, ConnAckCode.UNSUPPORTED_PROTOCOL_VERSION)


@pytest.mark.parametrize("level", [0, 3, 6, 255])
def test_MQTT_3_1_2_2_unsupported_version_gets_connack_0x84_then_close(level):
    server = ServerConnection()
    server.receive_data(connect5_bytes(level=level), 0.0)
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.rule == "MQTT-3.1.2-2"
    assert server.state is ConnectionState.ERROR
    sent = server.data_to_send()
    # Which version the client speaks is unknown: 3.1.1's CONNACK 0x01 is what every
    # client can read; an MQTT 5 CONNACK would say 0x84. Either, then close.
    assert sent in (bytes((0x20, 2, 0, 0x01)), bytes((0x20, 3, 0, 0x84, 0)))


def test_MQTT_3_1_2_3_reserved_connect_flag_is_malformed():
    refused_before_connack(connect5_bytes(flags=0x03), rule="MQTT-3.1.2-3", connack=MALFORMED)


def test_MQTT_3_1_2_4_clean_start_discards_the_session():
    client, server, _ = connect_only5(SansIOClient5(clean_start=True))
    old = ServerConnection()
    with pytest.raises(LocalProtocolError):
        server.accept(session_present=True)
    with pytest.raises(LocalProtocolError):
        server.accept(resume=old.session_state())
    assert server.state is ConnectionState.CONNECT_RECEIVED
    server.accept()
    assert flush(server, client)[0].session_present is False


def test_MQTT_3_1_2_5_clean_start_0_resumes_the_session():
    client, server = connected_pair5(SansIOClient5(clean_start=False, auto_ack=False))
    packet_id = server.publish("t", b"kept", Q1)
    flush(server, client)
    server.receive_data(b"", 1.0)
    assert drain(server) == [Disconnected(graceful=False)]
    client.new_connection()
    client2, server2 = connected_pair5(client, session_present=True, resume=server.session_state())
    (again,) = [p for p in client2.received if isinstance(p, Publish)]
    assert (again.packet_id, again.payload, again.dup) == (packet_id, b"kept", True)


def test_MQTT_3_1_2_6_clean_start_0_without_session_creates_one():
    client, server = connected_pair5(SansIOClient5(clean_start=False), session_present=False)
    assert client.connacks[-1].session_present is False
    packet_id = server.publish("t", b"new", Q1)
    assert [p.packet_id for p in server.session_state().outbound] == [packet_id]


def test_MQTT_3_1_2_7_will_and_its_properties_are_handed_to_the_server():
    will_props = props(will_delay_interval=30, content_type="text/plain",
                       user_properties=(("k", "v"),), message_expiry_interval=60)
    will = Will("status", b"offline", Q1, retain=False, properties=will_props)
    client, server, event = connect_only5(SansIOClient5(will=will))
    assert event.connect.will == will
    server.accept()
    assert server.connect.will == will


def test_MQTT_3_1_2_9_will_flag_requires_will_properties_topic_and_payload():
    refused_before_connack(connect5_bytes(flags=0x02 | WILL), connack=MALFORMED)
    refused_before_connack(connect5_bytes(flags=0x02 | WILL, payload_tail=b"\x00"),
                           connack=MALFORMED)
    refused_before_connack(connect5_bytes(flags=0x02 | WILL, payload_tail=b"\x00" + utf8("s")),
                           connack=MALFORMED)
    # will properties first, then topic and payload: accepted
    server = ServerConnection()
    server.receive_data(connect5_bytes(flags=0x02 | WILL, payload_tail=b"\x00" + WILL_PAYLOAD), 0)
    (event,) = drain(server)
    assert event.connect.will == Will("status", b"offline")


def test_MQTT_3_1_2_10_normal_disconnect_discards_the_will_0x04_keeps_it():
    will = Will("status", b"offline")
    for reason, publish_will in ((0x00, False), (0x04, True)):
        client, server = connected_pair5(SansIOClient5(will=will))
        client.disconnect(reason)
        (event,) = pump(client, server)
        assert isinstance(event, Disconnected) and event.graceful
        assert (event.reason_code, event.publish_will) == (reason, publish_will)
    client, server = connected_pair5(SansIOClient5(will=will))
    server.receive_data(b"", 1.0)
    (event,) = drain(server)
    assert event.publish_will  # the connection broke: the will stays due


def test_MQTT_3_1_2_11_will_qos_without_will_flag_is_malformed():
    refused_before_connack(connect5_bytes(flags=0x02 | 0x08), connack=MALFORMED)
    refused_before_connack(connect5_bytes(flags=0x02 | 0x10), connack=MALFORMED)


def test_MQTT_3_1_2_12_will_qos_3_is_malformed():
    tail = b"\x00" + WILL_PAYLOAD
    refused_before_connack(connect5_bytes(flags=0x02 | WILL | 0x18, payload_tail=tail),
                           connack=MALFORMED)


def test_MQTT_3_1_2_13_will_retain_without_will_flag_is_malformed():
    refused_before_connack(connect5_bytes(flags=0x02 | 0x20), connack=MALFORMED)


def test_MQTT_3_1_2_14_15_will_retain_is_handed_to_the_server():
    for retain in (False, True):
        will = Will("status", b"offline", Q2, retain=retain)
        client, server, event = connect_only5(SansIOClient5(will=will))
        assert event.connect.will.retain is retain


def test_MQTT_3_1_2_16_no_user_name_flag_means_no_user_name():
    refused_before_connack(connect5_bytes(payload_tail=utf8("user")), connack=MALFORMED)


def test_MQTT_3_1_2_17_user_name_flag_requires_a_user_name():
    refused_before_connack(connect5_bytes(flags=0x02 | USER_NAME), connack=MALFORMED)


def test_MQTT_3_1_2_18_no_password_flag_means_no_password():
    tail = utf8("user") + utf8("pw")
    refused_before_connack(connect5_bytes(flags=0x02 | USER_NAME, payload_tail=tail),
                           connack=MALFORMED)


def test_MQTT_3_1_2_19_password_flag_requires_a_password():
    refused_before_connack(connect5_bytes(flags=0x02 | USER_NAME | PASSWORD,
                                          payload_tail=utf8("user")), connack=MALFORMED)
    # MQTT 5 allows a password without a user name (3.1.2.9)
    client, server, event = connect_only5(SansIOClient5(password=b"secret"))
    assert (event.connect.username, event.connect.password) == (None, b"secret")


def test_MQTT_3_1_2_22_keep_alive_deadline_is_one_and_a_half_keep_alives():
    client, server = connected_pair5(SansIOClient5(keepalive=60), now=100.0)
    assert server.keepalive_deadline() == 190.0
    client.ping()
    pump(client, server, now=150.0)
    assert server.keepalive_deadline() == 240.0
    client0, server0 = connected_pair5(SansIOClient5(keepalive=0))
    assert server0.keepalive_deadline() is None


def test_MQTT_3_1_2_23_session_expiry_is_handed_to_the_server_and_state_survives():
    client = SansIOClient5(clean_start=False, auto_ack=False,
                           properties=props(session_expiry_interval=3600))
    client, server = connected_pair5(client)
    assert server.connect.properties.session_expiry_interval == 3600
    packet_id = server.publish("t", b"kept", Q2)
    flush(server, client)
    server.receive_data(b"", 5.0)
    drain(server)
    assert [p.packet_id for p in server.session_state().outbound] == [packet_id]


def test_MQTT_3_1_2_24_never_sends_a_packet_over_the_client_maximum():
    client = SansIOClient5(properties=props(maximum_packet_size=64))
    client, server = connected_pair5(client)
    server.publish("t", b"x" * 40, Q0)  # 46 bytes: goes
    server.publish("t", b"x" * 80, Q0)  # 86 bytes: must not
    server.publish("t", b"x" * 80, Q1)
    sub_id = client.subscribe(("a", Q0))
    pump(client, server)
    server.grant(sub_id, [0], reason_string="r" * 100, user_properties=[("k", "v" * 100)])
    data = bytes(client.raw_received) + server.data_to_send()
    sizes = [len(packet) for packet in split_packets(data)]
    assert sizes and max(sizes) <= 64
    packets = decode_all5(data)
    assert [p.payload for p in packets if isinstance(p, Publish)] == [b"x" * 40]
    assert [type(p).__name__ for p in packets] == ["ConnAck", "Publish", "SubAck"]


def test_MQTT_3_1_2_25_oversized_publish_is_dropped_as_if_delivered():
    client, server = connected_pair5(SansIOClient5(properties=props(maximum_packet_size=64)))
    assert server.publish("t", b"x" * 100, Q1) is None
    assert server.publish("t", b"x" * 100, Q2) is None
    stats = server.statistics()
    assert (stats.dropped_too_large, stats.outbound_inflight) == (2, 0)
    assert server.data_to_send() == b""
    assert server.session_state().outbound == ()
    packet_id = server.publish("t", b"small", Q1)
    assert [p.packet_id for p in flush(server, client)] == [packet_id]
    # a resumed session holding a message too large for the client's new maximum
    roomy = SansIOClient5(clean_start=False, auto_ack=False)
    roomy, first = connected_pair5(roomy)
    big = first.publish("t", b"x" * 100, Q1)
    small = first.publish("t", b"y", Q1)
    flush(first, roomy)
    tight = SansIOClient5(clean_start=False, properties=props(maximum_packet_size=64))
    tight, second = connected_pair5(tight, session_present=True, resume=first.session_state())
    assert [p.packet_id for p in tight.received if isinstance(p, Publish)] == [small]
    assert second.statistics().dropped_too_large == 1
    assert big not in [p.packet_id for p in second.session_state().outbound]


def _topics_sent(client: SansIOClient5) -> list[tuple[str, int | None]]:
    return [(p.topic, p.properties.topic_alias) for p in client.received
            if isinstance(p, Publish)]


def test_MQTT_3_1_2_26_topic_aliases_stay_within_the_client_maximum():
    client = SansIOClient5(properties=props(topic_alias_maximum=2))
    client, server = connected_pair5(client)
    topics = ["a/1", "a/2", "a/3", "a/1", "a/2", "a/3", "a/4", "a/1"] * 3
    for topic in topics:
        server.publish(topic, b"x", Q0)
    flush(server, client)  # the client asserts 1 <= alias <= 2 and resolves each one
    assert [p.topic for p in client.delivered] == topics
    aliases = {alias for _, alias in _topics_sent(client)} - {None}
    assert aliases <= {1, 2}
    # a message dropped as too large never took an alias the client did not learn
    client = SansIOClient5(properties=props(topic_alias_maximum=2, maximum_packet_size=64))
    client, server = connected_pair5(client)
    assert server.publish("big/one", b"x" * 100, Q1) is None
    server.publish("big/one", b"small", Q1)
    flush(server, client)  # the client asserts every alias it is sent was set first
    assert [p.topic for p in client.delivered] == ["big/one"]


def test_MQTT_3_1_2_27_no_topic_alias_maximum_means_no_aliases():
    for properties in (props(), props(topic_alias_maximum=0)):
        client, server = connected_pair5(SansIOClient5(properties=properties))
        for topic in ["a/1", "a/2", "a/1", "a/1"] * 5:
            server.publish(topic, b"x", Q1)
        flush(server, client)
        assert {alias for _, alias in _topics_sent(client)} == {None}


def test_MQTT_3_1_2_28_no_response_information_unless_requested():
    offered = props(response_information="replies/device-1")
    for request, expected in ((None, None), (0, None), (1, "replies/device-1")):
        client = SansIOClient5(properties=props(request_response_information=request))
        client, server, _ = connect_only5(client)
        server.accept(properties=offered)
        (connack,) = flush(server, client)
        assert connack.properties.response_information == expected


def test_MQTT_3_1_2_29_no_problem_information_unless_requested():
    for request, told in ((0, False), (1, True), (None, True)):
        client = SansIOClient5(properties=props(request_problem_information=request))
        client, server = connected_pair5(client)
        client.publish("t", b"x", Q1)
        sub_id = client.subscribe(("a", Q1))
        unsub_id = client.unsubscribe("a")
        (pub, sub, unsub) = pump(client, server)
        server.acknowledge(pub.publish.packet_id, 0x87, reason_string="not yours",
                           user_properties=[("rule", "r1")])
        server.grant(sub_id, [0x87], reason_string="not yours", user_properties=[("k", "v")])
        server.unsubscribed(unsub_id, reason_string="gone", user_properties=[("k", "v")])
        acks = flush(server, client)
        assert len(acks) == 3
        for ack in acks:
            assert (ack.properties.reason_string is not None) is told
            assert bool(ack.properties.user_properties) is told
        # DISCONNECT may always carry them
        server.disconnect(DisconnectCode.ADMINISTRATIVE_ACTION, reason_string="revoked")
        (disconnect,) = flush(server, client)
        assert isinstance(disconnect, Disconnect)


def test_MQTT_3_1_3_1_payload_fields_in_order():
    will = Will("w", b"m", Q2, True, properties=props(will_delay_interval=5))
    connect = Connect("id", False, 30, will, "user", b"pw", protocol_level=5,
                      properties=props(session_expiry_interval=10))
    server = ServerConnection()
    server.receive_data(encode5(connect), 0.0)
    assert drain(server) == [ConnectReceived(connect)]
    # by hand: client id, will properties, will topic, will payload, user name, password
    tail = b"\x05\x18\x00\x00\x00\x05" + utf8("w") + utf8(b"m") + utf8("user") + utf8(b"pw")
    data = connect5_bytes(client_id=b"id", flags=0x02 | WILL | USER_NAME | PASSWORD,
                          payload_tail=tail)
    server = ServerConnection()
    server.receive_data(data, 0.0)
    (event,) = drain(server)
    assert event.connect.will == Will("w", b"m", properties=props(will_delay_interval=5))
    assert (event.connect.username, event.connect.password) == ("user", b"pw")


def test_MQTT_3_1_3_3_client_identifier_must_be_present():
    body = utf8("MQTT") + bytes((5, 0x02)) + b"\x00\x00" + b"\x00"
    refused_before_connack(raw(0x10, body), connack=MALFORMED)


def test_MQTT_3_1_3_4_client_identifier_must_be_utf8():
    refused_before_connack(connect5_bytes(client_id=b"\xc0\xaf"), connack=MALFORMED)


def test_MQTT_3_1_3_5_allows_1_to_23_alphanumeric_client_ids():
    for client_id in ("a", "0123456789abcdefghijklm", "ZZZZZZZZZZZZZZZZZZZZZZZ"):
        client, server = connected_pair5(SansIOClient5(client_id, clean_start=False))
        assert server.connect.client_id == client_id


def test_MQTT_3_1_3_6_7_empty_client_id_gets_an_assigned_identifier():
    for clean_start in (True, False):
        client, server, event = connect_only5(SansIOClient5("", clean_start=clean_start))
        assert event.connect.client_id == ""
        with pytest.raises(LocalProtocolError):
            server.accept()  # the server must assign one
        server.accept(assigned_client_id="gw-7f3a")
        assert server.client_id == "gw-7f3a"
        (connack,) = flush(server, client)
        assert connack.properties.assigned_client_identifier == "gw-7f3a"


def test_MQTT_3_1_3_8_rejected_client_id_gets_connack_0x85_then_close():
    client, server, _ = connect_only5(SansIOClient5("someone-else"))
    server.refuse(ConnAckCode.CLIENT_IDENTIFIER_NOT_VALID)
    assert flush(server, client) == [ConnAck(ConnAckCode.CLIENT_IDENTIFIER_NOT_VALID)]
    assert server.state is ConnectionState.CLOSED
    # one the session refuses by itself (longer than its limit) gets 0x85 too
    refused_before_connack(encode5(Connect("x" * 24, protocol_level=5)),
                           connack=ConnAckCode.CLIENT_IDENTIFIER_NOT_VALID,
                           max_client_id_length=23)


def test_MQTT_3_1_3_10_will_user_properties_keep_their_order():
    pairs = (("b", "1"), ("a", "2"), ("b", "0"), ("a", "2"))
    will = Will("status", b"offline", properties=props(user_properties=pairs))
    client, server, event = connect_only5(SansIOClient5(will=will))
    assert event.connect.will.properties.user_properties == pairs


def test_MQTT_3_1_3_11_will_topic_must_be_utf8():
    tail = b"\x00" + utf8(b"st\xffatus") + utf8(b"offline")
    refused_before_connack(connect5_bytes(flags=0x02 | WILL, payload_tail=tail),
                           connack=MALFORMED)


def test_MQTT_3_1_3_12_user_name_must_be_utf8():
    refused_before_connack(connect5_bytes(flags=0x02 | USER_NAME, payload_tail=utf8(b"\xfe")),
                           connack=MALFORMED)


def test_MQTT_3_1_4_1_malformed_connect_closes():
    good = connect5_bytes()
    refused_before_connack(good[:1] + bytes((good[1] + 1,)) + good[2:] + b"\x00",
                           connack=MALFORMED)  # a trailing byte
    topic_alias = prop_list(b"\x23\x00\x01")  # not a CONNECT property
    refused_before_connack(connect5_bytes(properties=topic_alias), connack=MALFORMED)
    twice = prop_list(b"\x11\x00\x00\x00\x0a", b"\x11\x00\x00\x00\x0a")
    refused_before_connack(connect5_bytes(properties=twice), connack=PROTOCOL_ERROR)
    receive_max_0 = prop_list(b"\x21\x00\x00")
    refused_before_connack(connect5_bytes(properties=receive_max_0), connack=PROTOCOL_ERROR)


def test_MQTT_3_1_4_2_refused_connect_closes():
    client, server, _ = connect_only5()
    server.refuse(ConnAckCode.NOT_AUTHORIZED, reason_string="certificate revoked")
    (connack,) = flush(server, client)
    assert (connack.return_code, connack.session_present) == (0x87, False)
    assert connack.properties.reason_string == "certificate revoked"
    assert server.state is ConnectionState.CLOSED


def test_MQTT_3_1_4_3_taken_over_connection_gets_disconnect_0x8e():
    client, server = connected_pair5()
    server.disconnect(DisconnectCode.SESSION_TAKEN_OVER)
    assert flush(server, client) == [Disconnect(DisconnectCode.SESSION_TAKEN_OVER)]
    assert server.state is ConnectionState.CLOSED


def test_MQTT_3_1_4_5_accepted_connect_gets_connack_0x00():
    client, server, _ = connect_only5()
    server.accept()
    (connack,) = flush(server, client)
    assert (connack.return_code, connack.session_present) == (0x00, False)
    assert server.state is ConnectionState.CONNECTED


def test_MQTT_3_1_4_6_nothing_after_a_refused_connect_is_processed():
    server = ServerConnection()
    pipelined = encode5(Connect("device-1", protocol_level=5)) + encode5(
        Publish("a", b"x", Q1, packet_id=1)) + encode5(PingReq())
    server.receive_data(pipelined, 0.0)
    (event,) = drain(server)
    assert isinstance(event, ConnectReceived)
    server.refuse(ConnAckCode.BANNED)
    assert server.next_event() is None
    server.receive_data(encode5(PingReq()), 1.0)
    assert server.next_event() is None
    assert decode5(server.data_to_send()) == ConnAck(ConnAckCode.BANNED)
