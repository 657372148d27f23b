"""MQTT 5.0 normative statements of section 3.2 (CONNACK), checked on `ServerConnection`
with real bytes. One test per statement; docs/mqtt5-conformance.md maps them."""

from __future__ import annotations

import pytest
from sansio_client import (
    Q0,
    Q1,
    Q2,
    SansIOClient5,
    connect_only5,
    connected_pair5,
    decode_all5,
    drain,
    encode5,
    flush,
    prop_list,
    props,
    pump,
    raw,
    utf8,
    violation_after_connect5,
)

from gateway.mqtt import (
    ConnAck,
    ConnAckCode,
    Connect,
    ConnectionState,
    ConnectReturnCode,
    LocalProtocolError,
    PingReq,
    PingResp,
    PubComp,
    Publish,
    PubRec,
    RemoteProtocolError,
    ServerConnection,
    Will,
)


def publish_with_alias(alias: int, topic: str = "a") -> bytes:
    """A QoS 0 MQTT 5 PUBLISH that sets topic alias `alias` for `topic`."""
    return raw(0x30, utf8(topic) + prop_list(b"\x23" + alias.to_bytes(2, "big")) + b"x")


def test_MQTT_3_2_0_1_connack_comes_before_anything_else():
    server = ServerConnection()
    server.receive_data(encode5(Connect("device-1", protocol_level=5)) + encode5(PingReq()), 0.0)
    server.next_event()  # ConnectReceived
    assert server.data_to_send() == b""  # the pipelined PINGREQ waits for the decision
    with pytest.raises(LocalProtocolError):
        server.publish("a", b"x", Q0)
    with pytest.raises(LocalProtocolError):
        server.next_event()
    server.accept()
    assert server.next_event() is None
    packets = decode_all5(server.data_to_send())
    assert [type(p) for p in packets] == [ConnAck, PingResp]


def test_MQTT_3_2_0_2_only_one_connack():
    client, server, _ = connect_only5()
    server.accept()
    with pytest.raises(LocalProtocolError):
        server.accept()
    with pytest.raises(LocalProtocolError):
        server.refuse(ConnAckCode.NOT_AUTHORIZED)
    assert [type(p) for p in flush(server, client)] == [ConnAck]


@pytest.mark.parametrize("session_present", [False, True])
def test_MQTT_3_2_2_1_connack_reserved_flag_bits_are_zero(session_present):
    client, server, _ = connect_only5(SansIOClient5(clean_start=False))
    server.accept(session_present=session_present)
    data = server.data_to_send()
    assert data[0] == 0x20
    assert data[2] == int(session_present)  # bits 7-1 of the acknowledge flags are 0


def test_MQTT_3_2_2_2_clean_start_gets_session_present_0():
    client, server = connected_pair5(SansIOClient5(clean_start=True))
    assert client.connacks[-1].session_present is False
    client, fresh, _ = connect_only5(SansIOClient5(clean_start=True))
    with pytest.raises(LocalProtocolError):
        fresh.accept(session_present=True)


@pytest.mark.parametrize("stored", [False, True])
def test_MQTT_3_2_2_3_session_present_follows_the_stored_session(stored):
    client, server = connected_pair5(SansIOClient5(clean_start=False), session_present=stored)
    (connack,) = client.connacks
    assert (connack.return_code, connack.session_present) == (0x00, stored)


def test_MQTT_3_2_2_6_refusal_has_session_present_0():
    client, server, _ = connect_only5(SansIOClient5(clean_start=False))
    server.refuse(ConnAckCode.BAD_USER_NAME_OR_PASSWORD)
    data = server.data_to_send()
    assert data[:4] == bytes((0x20, data[1], 0x00, 0x86))


def test_MQTT_3_2_2_7_refusing_connack_closes():
    for code in (ConnAckCode.NOT_AUTHORIZED, ConnAckCode.BANNED,
                 ConnAckCode.QUOTA_EXCEEDED, ConnAckCode.SERVER_BUSY):
        client, server, _ = connect_only5()
        server.refuse(code)
        assert server.state is ConnectionState.CLOSED
        assert flush(server, client) == [ConnAck(code)]
        with pytest.raises(LocalProtocolError):
            server.publish("a", b"x", Q0)
        server.receive_data(encode5(PingReq()), 1.0)
        assert server.next_event() is None
        assert server.data_to_send() == b""


def test_MQTT_3_2_2_8_connack_reason_codes_come_from_the_table():
    for not_a_connack_code in (0x8F, 0x10, 0x8E, 0x91, 0xA1, 0x100):  # 0..5: 3.1.1 codes
        client, server, _ = connect_only5()
        with pytest.raises((LocalProtocolError, ValueError)):
            server.refuse(not_a_connack_code)
        assert server.data_to_send() == b""
    # a 3.1.1 return code is translated to its MQTT 5 reason
    client, server, _ = connect_only5()
    server.refuse(ConnectReturnCode.NOT_AUTHORIZED)
    assert flush(server, client) == [ConnAck(ConnAckCode.NOT_AUTHORIZED)]
    # every code of table 3-1 goes out as given
    for code in ConnAckCode:
        if code == ConnAckCode.SUCCESS:
            continue
        client, server, _ = connect_only5()
        server.refuse(code)
        assert flush(server, client)[0].return_code == code


def test_MQTT_3_2_2_9_qos2_is_supported_so_no_maximum_qos_is_sent():
    client, server = connected_pair5()
    assert client.connacks[0].properties.maximum_qos is None  # absent: QoS 2 supported
    client.publish("t", b"x", Q2)
    (event,) = pump(client, server)
    server.acknowledge(event.publish.packet_id)
    pump(client, server)  # PUBREC, then the client's PUBREL
    pump(client, server)  # PUBCOMP
    assert [type(p) for p in client.acks] == [PubRec, PubComp]


def test_MQTT_3_2_2_10_subscribe_above_maximum_qos_is_accepted():
    limited = {"properties": props(maximum_qos=1)}  # were a Maximum QoS announced
    client, server = connected_pair5(accept=limited)
    assert client.connacks[0].properties.maximum_qos == 1
    sub_id = client.subscribe(("a", Q0), ("b", Q1), ("c", Q2))
    (event,) = pump(client, server)
    assert event.subscriptions == (("a", Q0), ("b", Q1), ("c", Q2))
    server.grant(sub_id, [0, 1, 1])
    assert flush(server, client)[0].return_codes == (0, 1, 1)


def test_MQTT_3_2_2_13_will_retain_is_accepted_and_retain_available():
    will = Will("status", b"offline", Q1, retain=True)
    client, server = connected_pair5(SansIOClient5(will=will))
    assert client.connacks[0].properties.retain_available in (None, 1)
    assert server.connect.will.retain is True


def test_MQTT_3_2_2_15_packet_over_server_maximum_gets_disconnect_0x95():
    client, server = connected_pair5(max_packet_size=128)
    assert client.connacks[0].properties.maximum_packet_size == 128  # announced
    violation_after_connect5(encode5(Publish("t", b"x" * 200)), reason=0x95, max_packet_size=128)


def test_MQTT_3_2_2_16_assigned_client_identifier_is_in_the_connack():
    client, server, _ = connect_only5(SansIOClient5(""))
    server.accept(assigned_client_id="auto-1b2c")
    (connack,) = flush(server, client)
    assert connack.return_code == 0
    assert connack.properties.assigned_client_identifier == "auto-1b2c"
    # a client that chose its own id is not sent one
    client, server = connected_pair5(SansIOClient5("device-1"))
    assert client.connacks[0].properties.assigned_client_identifier is None


def test_MQTT_3_2_2_17_topic_alias_over_server_maximum_gets_disconnect_0x94():
    client, server = connected_pair5(topic_alias_maximum=4)
    assert client.connacks[0].properties.topic_alias_maximum == 4
    violation_after_connect5(publish_with_alias(5), reason=0x94, topic_alias_maximum=4)


def test_MQTT_3_2_2_18_topic_alias_when_none_allowed_gets_disconnect_0x94():
    client, server = connected_pair5(topic_alias_maximum=0)
    assert client.connacks[0].properties.topic_alias_maximum in (None, 0)
    violation_after_connect5(publish_with_alias(1), reason=0x94, topic_alias_maximum=0)


def test_MQTT_3_2_2_19_20_connack_drops_reason_string_and_user_properties_over_client_maximum():
    small = SansIOClient5(properties=props(maximum_packet_size=40))
    client, server, _ = connect_only5(small)
    server.accept(properties=props(reason_string="r" * 60, user_properties=(("k", "v" * 60),)))
    data = server.data_to_send()
    assert len(data) <= 40
    (connack,) = client.receive_data(data)
    assert connack.return_code == 0
    assert connack.properties.reason_string is None
    assert connack.properties.user_properties == ()
    client, server, _ = connect_only5(SansIOClient5(properties=props(maximum_packet_size=40)))
    server.refuse(ConnAckCode.NOT_AUTHORIZED, reason_string="r" * 60,
                  properties=props(user_properties=(("k", "v" * 60),)))
    data = server.data_to_send()
    assert len(data) <= 40
    assert client.receive_data(data) == [ConnAck(ConnAckCode.NOT_AUTHORIZED)]
    # a refusal the session makes by itself fits too (here: no enhanced authentication)
    small = props(maximum_packet_size=20, authentication_method="SCRAM-SHA-256")
    client = SansIOClient5(properties=small)
    client.connect()
    server = ServerConnection()
    server.receive_data(client.data_to_send(), 0.0)
    with pytest.raises(RemoteProtocolError):
        drain(server)
    data = server.data_to_send()
    assert len(data) <= 20
    assert client.receive_data(data) == [ConnAck(ConnAckCode.BAD_AUTHENTICATION_METHOD)]
    # with room enough both go out
    client, server, _ = connect_only5()
    server.accept(properties=props(reason_string="welcome", user_properties=(("k", "v"),)))
    (connack,) = flush(server, client)
    assert connack.properties.reason_string == "welcome"
    assert connack.properties.user_properties == (("k", "v"),)


def test_MQTT_3_2_2_22_server_keeps_the_clients_keep_alive_unless_it_sends_its_own():
    client, server = connected_pair5(SansIOClient5(keepalive=60), now=100.0)
    assert client.connacks[0].properties.server_keep_alive is None
    assert server.keepalive_deadline() == 190.0
    client, server, _ = connect_only5(SansIOClient5(keepalive=60), now=100.0)
    server.accept(server_keep_alive=10)
    (connack,) = flush(server, client)
    assert connack.properties.server_keep_alive == 10
    assert server.keepalive_deadline() == 115.0
    client.ping()
    pump(client, server, now=110.0)
    assert server.keepalive_deadline() == 125.0


def test_MQTT_3_2_2_11_14_qos_2_and_retain_are_always_available():
    client, server = connected_pair5()
    connack = client.connacks[0]
    assert connack.properties.maximum_qos is None
    assert connack.properties.retain_available in (None, 1)
    client.publish("t", b"x", Q2, retain=True)
    client.publish("t", b"y", Q1, retain=True)
    events = pump(client, server)
    assert [(e.publish.qos, e.publish.retain) for e in events] == [(Q2, True), (Q1, True)]
    # were they announced unavailable, the session would refuse what breaks them
    violation_after_connect5(encode5(Publish("t", b"x", Q2, packet_id=1)), reason=0x9B,
                            accept={"properties": props(maximum_qos=1)})
    violation_after_connect5(encode5(Publish("t", b"x", Q0, retain=True)), reason=0x9A,
                            accept={"properties": props(retain_available=0)})
