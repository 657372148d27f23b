"""MQTT 5.0 normative statements of sections 3.12 to 3.15 (PINGREQ, DISCONNECT, AUTH),
4.12 (enhanced authentication, not offered) and 4.13 (handling errors), checked on
`ServerConnection` with real bytes. One test per statement; docs/mqtt5-conformance.md
maps them."""

from __future__ import annotations

import pytest
from sansio_client import (
    Q0,
    Q1,
    SansIOClient5,
    connect5_bytes,
    connect_only5,
    connected_pair5,
    decode5,
    drain,
    encode5,
    flush,
    prop_list,
    props,
    pump,
    raw,
    refused_before_connack,
    utf8,
    violation_after_connect5,
)

from gateway.mqtt import (
    Auth,
    ConnAckCode,
    ConnectionState,
    Disconnect,
    DisconnectCode,
    Disconnected,
    LocalProtocolError,
    PingReq,
    PingResp,
    RemoteProtocolError,
    ServerConnection,
    Will,
)

MALFORMED = 0x81
PROTOCOL_ERROR = 0x82
SMALL = 24
SERVER_REASONS = [r for r in DisconnectCode if r != DisconnectCode.DISCONNECT_WITH_WILL_MESSAGE]


def test_MQTT_3_12_4_1_pingreq_is_answered_with_pingresp():
    client, server = connected_pair5()
    client.ping()
    client.ping()
    assert pump(client, server) == []
    assert client.pingresps == 2
    assert [type(p) for p in client.received[1:]] == [PingResp, PingResp]


def test_MQTT_3_14_0_1_no_disconnect_before_a_successful_connack():
    client, server, _ = connect_only5()
    server.disconnect(DisconnectCode.SERVER_SHUTTING_DOWN)  # not yet accepted: a close
    assert server.data_to_send() == b""
    assert server.state is ConnectionState.CLOSED
    client, server, _ = connect_only5()
    server.refuse(ConnAckCode.SERVER_BUSY)
    server.data_to_send()
    server.disconnect(DisconnectCode.SERVER_SHUTTING_DOWN)
    assert server.data_to_send() == b""
    server = ServerConnection()
    server.disconnect(DisconnectCode.SERVER_SHUTTING_DOWN)  # nothing received at all
    assert server.data_to_send() == b""
    # protocol errors before the CONNACK are answered with a CONNACK, never a DISCONNECT
    refused_before_connack(connect5_bytes(flags=0x03), connack=MALFORMED)


def test_MQTT_3_14_1_1_disconnect_with_reserved_bits_is_malformed():
    for first in (0xE1, 0xE8, 0xEF):
        violation_after_connect5(bytes((first, 0)), reason=MALFORMED)


def test_MQTT_3_14_2_1_disconnect_reason_codes_come_from_the_table():
    for reason in SERVER_REASONS:
        client, server = connected_pair5()
        server.disconnect(reason)
        assert [p.reason_code for p in flush(server, client)] == [reason]
    for not_for_a_server in (DisconnectCode.DISCONNECT_WITH_WILL_MESSAGE, 0x01, 0x10, 0x84, 0xFF):
        client, server = connected_pair5()
        with pytest.raises((LocalProtocolError, ValueError)):
            server.disconnect(not_for_a_server)
        assert server.data_to_send() == b""
    # from the client: a code outside the table, or one only a server sends, is refused
    for code in (0x01, 0x84, 0x8E, 0x9C):
        violation_after_connect5(raw(0xE0, bytes((code, 0))))


def test_MQTT_3_14_2_2_server_disconnect_has_no_session_expiry():
    client = SansIOClient5(properties=props(session_expiry_interval=600))
    client, server = connected_pair5(client)
    server.disconnect(DisconnectCode.ADMINISTRATIVE_ACTION, reason_string="revoked")
    (disconnect,) = flush(server, client)
    assert disconnect.properties.session_expiry_interval is None
    assert disconnect.properties.reason_string == "revoked"
    # the client's may, unless its CONNECT said 0: then it is a protocol error
    client, server = connected_pair5(SansIOClient5(properties=props(session_expiry_interval=600)))
    client.disconnect(0, props(session_expiry_interval=0))
    (event,) = pump(client, server)
    assert event.properties.session_expiry_interval == 0
    violation_after_connect5(encode5(Disconnect(0, props(session_expiry_interval=60))),
                            reason=PROTOCOL_ERROR)


def test_MQTT_3_14_2_3_4_disconnect_drops_reason_string_and_user_properties_over_client_maximum():
    client = SansIOClient5(properties=props(maximum_packet_size=SMALL))
    client, server = connected_pair5(client)
    server.disconnect(DisconnectCode.ADMINISTRATIVE_ACTION,
                      reason_string="network erased by its owner " + "x" * 40,
                      user_properties=[("k", "v" * 40)])
    data = server.data_to_send()
    assert len(data) <= SMALL
    assert client.receive_data(data) == [Disconnect(DisconnectCode.ADMINISTRATIVE_ACTION)]


def test_MQTT_3_14_4_1_2_nothing_is_sent_after_disconnect_and_the_connection_closes():
    client, server = connected_pair5()
    client.ping()
    server.receive_data(client.data_to_send(), 1.0)
    server.disconnect(DisconnectCode.KEEP_ALIVE_TIMEOUT)
    assert server.state is ConnectionState.CLOSED
    packets = flush(server, client)
    assert packets[-1] == Disconnect(DisconnectCode.KEEP_ALIVE_TIMEOUT)
    with pytest.raises(LocalProtocolError):
        server.publish("t", b"x", Q0)
    assert server.next_event() is None
    server.receive_data(encode5(PingReq()), 2.0)
    assert server.next_event() is None
    assert server.data_to_send() == b""


def test_MQTT_3_14_4_3_normal_disconnect_discards_the_will():
    client, server = connected_pair5(SansIOClient5(will=Will("status", b"offline", Q1)))
    client.disconnect(DisconnectCode.NORMAL_DISCONNECTION)
    client.ping()  # after DISCONNECT: never processed
    assert pump(client, server) == [Disconnected(graceful=True)]
    assert not Disconnected(graceful=True).publish_will
    assert client.pingresps == 0
    assert server.state is ConnectionState.CLOSED


def test_MQTT_3_15_1_1_auth_with_flags_is_malformed():
    for first in (0xF1, 0xF2, 0xF8):
        violation_after_connect5(raw(first, b"\x00\x00"), reason=MALFORMED)


def test_MQTT_4_12_0_1_unsupported_authentication_method_gets_connack_0x8c():
    method = prop_list(b"\x15" + utf8("SCRAM-SHA-256"), b"\x16" + utf8(b"client-first"))
    error = refused_before_connack(connect5_bytes(properties=method),
                                   connack=ConnAckCode.BAD_AUTHENTICATION_METHOD)
    assert isinstance(error, RemoteProtocolError)
    # an AUTH the client pipelined after it is never processed
    server = ServerConnection()
    server.receive_data(connect5_bytes(properties=method) + encode5(Auth(0x18)), 0.0)
    with pytest.raises(RemoteProtocolError):
        drain(server)
    assert decode5(server.data_to_send()).return_code == 0x8C


def test_MQTT_4_12_0_6_no_authentication_method_means_no_auth_from_the_server():
    client, server = connected_pair5()
    assert client.connacks[0].properties.authentication_method is None
    assert client.connacks[0].properties.authentication_data is None
    client.publish("t", b"x", Q1)
    client.ping()
    (event,) = pump(client, server)
    server.acknowledge(event.publish.packet_id)
    server.disconnect(DisconnectCode.SERVER_SHUTTING_DOWN)
    flush(server, client)  # the client fails the test on any AUTH
    assert not any(isinstance(p, Auth) for p in client.received)


def test_MQTT_4_12_0_7_auth_without_authentication_method_is_a_protocol_error():
    for reason in (0x00, 0x18, 0x19):
        violation_after_connect5(encode5(Auth(reason)), reason=PROTOCOL_ERROR)
    # before the CONNACK too: an AUTH first is not a CONNECT
    refused_before_connack(encode5(Auth(0x18)))


def test_MQTT_4_13_1_1_malformed_packet_or_protocol_error_closes():
    malformed = violation_after_connect5(bytes((0xC0, 1, 0)), reason=MALFORMED)  # PINGREQ body
    protocol = violation_after_connect5(encode5(Auth(0x19)), reason=PROTOCOL_ERROR)
    assert (malformed.reason_code, protocol.reason_code) == (MALFORMED, PROTOCOL_ERROR)
    client, server = connected_pair5()
    server.receive_data(bytes((0x00, 0)), 1.0)  # reserved packet type 0
    with pytest.raises(RemoteProtocolError) as first:
        server.next_event()
    with pytest.raises(RemoteProtocolError) as again:
        server.next_event()
    assert again.value is first.value  # stays failed
    assert server.state is ConnectionState.ERROR
    server.receive_data(encode5(PingReq()), 2.0)
    assert [p.reason_code for p in client.receive_data(server.data_to_send())] == [MALFORMED]


def test_MQTT_4_13_2_1_failure_reason_closes_the_connection():
    for code in (ConnAckCode.UNSPECIFIED_ERROR, ConnAckCode.USE_ANOTHER_SERVER):
        client, server, _ = connect_only5()
        server.refuse(code)
        assert server.state is ConnectionState.CLOSED
    for reason in (DisconnectCode.MESSAGE_RATE_TOO_HIGH, DisconnectCode.USE_ANOTHER_SERVER):
        client, server = connected_pair5()
        server.disconnect(reason, server_reference="gw-2.example:8883")
        assert server.state is ConnectionState.CLOSED
        (disconnect,) = flush(server, client)
        assert disconnect.reason_code == reason
    # a client's 0x80+ DISCONNECT ends the connection as well
    client, server = connected_pair5()
    client.disconnect(DisconnectCode.UNSPECIFIED_ERROR)
    (event,) = pump(client, server)
    assert isinstance(event, Disconnected) and event.reason_code == 0x80
    assert server.state is ConnectionState.CLOSED
