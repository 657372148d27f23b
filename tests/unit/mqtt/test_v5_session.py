"""The MQTT 5 session state machine over a fake wire: a `SansIOClient` at protocol level 5
against a `ServerConnection` (OASIS MQTT 5.0, sections 3.1-3.15, 4.3, 4.9, 4.13)."""

from __future__ import annotations

import pytest
from sansio_client import SansIOClient, connected_pair, drain, flush, pump

from gateway.mqtt._state import ConnectionState
from gateway.mqtt.codec import DEFAULT_MAX_PACKET_SIZE, decode, encode
from gateway.mqtt.errors import LocalProtocolError, RemoteProtocolError
from gateway.mqtt.events import (
    ConnectReceived,
    DeliveryComplete,
    Disconnected,
    PublishReceived,
    SubscribeReceived,
    UnsubscribeReceived,
)
from gateway.mqtt.packets import (
    Auth,
    ConnAck,
    Disconnect,
    PubAck,
    PubRec,
    PubRel,
    QoS,
    SubAck,
    Subscribe,
    SubscriptionOptions,
    UnsubAck,
    Will,
)
from gateway.mqtt.properties import Properties
from gateway.mqtt.reason_codes import ConnAckCode, ConnectReturnCode, DisconnectCode
from gateway.mqtt.session import ServerConnection

Q0, Q1, Q2 = QoS.AT_MOST_ONCE, QoS.AT_LEAST_ONCE, QoS.EXACTLY_ONCE


def client5(client_id: str = "device-1", **props: object) -> SansIOClient:
    return SansIOClient(client_id, protocol_level=5, properties=Properties(**props))


def pair5(accept: dict | None = None, client_props: dict | None = None, **server_options):
    return connected_pair(client5(**(client_props or {})), accept=accept, **server_options)


def failing(client: SansIOClient, server: ServerConnection) -> RemoteProtocolError:
    """Deliver the client's bytes; the server must fail and answer with a DISCONNECT."""
    server.receive_data(client.data_to_send(), 1.0)
    with pytest.raises(RemoteProtocolError) as caught:
        drain(server)
    assert server.state is ConnectionState.ERROR
    flush(server, client)
    assert client.disconnects, "an MQTT 5 client is told why"
    assert client.disconnects[-1].reason_code == caught.value.reason_code
    return caught.value


def connect_only(client: SansIOClient, **server_options) -> ServerConnection:
    server = ServerConnection(**server_options)
    client.connect()
    server.receive_data(client.data_to_send(), 0.0)
    return server


# ---------------------------------------------------------------------- CONNECT / CONNACK


def test_connack_announces_the_servers_limits() -> None:
    client, server = pair5(max_packet_size=4096, max_inbound_inflight=10, topic_alias_maximum=4)
    props = client.connacks[-1].properties
    assert (props.maximum_packet_size, props.receive_maximum, props.topic_alias_maximum) == (
        4096, 10, 4)
    assert server.protocol_level == 5


def test_an_empty_client_id_gets_the_assigned_one() -> None:
    client = SansIOClient("", protocol_level=5, clean_session=False)
    client, server = connected_pair(client, accept={"assigned_client_id": "gw-1"})
    assert client.connacks[-1].properties.assigned_client_identifier == "gw-1"
    assert server.client_id == "gw-1"


def test_accept_refuses_a_missing_or_needless_assigned_id() -> None:
    server = connect_only(SansIOClient("", protocol_level=5))
    drain(server)
    with pytest.raises(LocalProtocolError):
        server.accept()
    server = connect_only(client5("named"))
    drain(server)
    with pytest.raises(LocalProtocolError):
        server.accept(assigned_client_id="other")


def test_server_keep_alive_replaces_the_clients_for_the_deadline() -> None:
    client = SansIOClient(protocol_level=5, keepalive=600)
    client, server = connected_pair(client, accept={"server_keep_alive": 60})
    assert client.connacks[-1].properties.server_keep_alive == 60
    assert server.keepalive_deadline() == 90.0


def test_an_authentication_method_gets_connack_0x8c() -> None:
    server = connect_only(client5(authentication_method="SCRAM-SHA-1"))
    with pytest.raises(RemoteProtocolError):
        drain(server)
    assert decode(server.data_to_send(), 5).return_code == ConnAckCode.BAD_AUTHENTICATION_METHOD


def test_a_long_client_id_gets_connack_0x85() -> None:
    server = connect_only(client5("x" * 40), max_client_id_length=23)
    with pytest.raises(RemoteProtocolError):
        drain(server)
    assert decode(server.data_to_send(), 5).return_code == ConnAckCode.CLIENT_IDENTIFIER_NOT_VALID


def test_a_will_topic_over_the_limits_gets_connack_0x90_or_closes_311() -> None:
    will = Will("a/b/c/d", b"x")
    server = connect_only(SansIOClient(protocol_level=5, will=will), max_topic_levels=3)
    with pytest.raises(RemoteProtocolError):
        drain(server)
    assert decode(server.data_to_send(), 5).return_code == ConnAckCode.TOPIC_NAME_INVALID
    server = connect_only(SansIOClient(will=will), max_topic_levels=3)
    with pytest.raises(RemoteProtocolError):
        drain(server)
    assert server.data_to_send() == b""


def test_will_properties_reach_the_application() -> None:
    will = Will("w", b"x", properties=Properties(will_delay_interval=30, content_type="t"))
    server = connect_only(SansIOClient(protocol_level=5, will=will))
    (event,) = drain(server)
    assert isinstance(event, ConnectReceived)
    assert event.connect.will.properties.will_delay_interval == 30


@pytest.mark.parametrize(("code", "v4", "v5"), [
    (ConnAckCode.BANNED, ConnectReturnCode.NOT_AUTHORIZED, ConnAckCode.BANNED),
    (ConnAckCode.QUOTA_EXCEEDED, ConnectReturnCode.SERVER_UNAVAILABLE,
     ConnAckCode.QUOTA_EXCEEDED),
    (ConnectReturnCode.NOT_AUTHORIZED, ConnectReturnCode.NOT_AUTHORIZED,
     ConnAckCode.NOT_AUTHORIZED),
])
def test_refuse_speaks_the_clients_version(code, v4, v5) -> None:
    server = connect_only(SansIOClient())
    drain(server)
    server.refuse(code)
    assert decode(server.data_to_send()) == ConnAck(v4)
    server = connect_only(SansIOClient(protocol_level=5))
    drain(server)
    server.refuse(code, reason_string="network erased")
    assert decode(server.data_to_send(), 5) == ConnAck(v5, False, Properties(
        reason_string="network erased"))


def test_no_problem_information_drops_the_reason_string_of_a_refusal() -> None:
    server = connect_only(client5(request_problem_information=0))
    drain(server)
    server.refuse(ConnAckCode.BANNED, reason_string="why")
    assert decode(server.data_to_send(), 5) == ConnAck(ConnAckCode.BANNED)


# ---------------------------------------------------------------------- inbound PUBLISH


def test_acknowledge_carries_a_reason_and_a_reason_string() -> None:
    client, server = pair5()
    packet_id = client.publish("r/t", b"999", Q1)
    (event,) = pump(client, server)
    assert isinstance(event, PublishReceived)
    server.acknowledge(packet_id, 0x83, reason_string="range: t <= 100")
    flush(server, client)
    assert client.received[-1] == PubAck(packet_id, 0x83, Properties(
        reason_string="range: t <= 100"))


def test_acknowledge_sends_a_plain_puback_to_a_311_client() -> None:
    client, server = connected_pair()
    packet_id = client.publish("r/t", b"999", Q1)
    pump(client, server)
    server.acknowledge(packet_id, 0x83, reason_string="range")
    flush(server, client)
    assert client.received[-1] == PubAck(packet_id)


def test_request_problem_information_0_drops_reason_strings_on_acks() -> None:
    client, server = pair5(client_props={"request_problem_information": 0})
    packet_id = client.publish("r/t", b"1", Q1)
    pump(client, server)
    server.acknowledge(packet_id, 0x99, reason_string="not JSON", user_properties=[("a", "b")])
    flush(server, client)
    assert client.received[-1] == PubAck(packet_id, 0x99)


def test_a_refused_qos2_message_is_not_held_for_pubrel() -> None:
    client, server = pair5()
    packet_id = client.publish("r/t", b"1", Q2)
    pump(client, server)
    server.acknowledge(packet_id, 0x87)
    flush(server, client)
    assert client.received[-1] == PubRec(packet_id, 0x87)
    assert server.session_state().inbound_awaiting_pubrel == frozenset()


def test_more_than_the_receive_maximum_is_disconnect_0x93() -> None:
    client, server = pair5(max_inbound_inflight=2)
    for _ in range(3):
        client.publish("t", b"", Q1)
    assert failing(client, server).reason_code == DisconnectCode.RECEIVE_MAXIMUM_EXCEEDED


def test_inbound_topic_aliases_are_resolved_before_the_application() -> None:
    client, server = pair5(topic_alias_maximum=2)
    client.publish("long/topic", b"1", properties=Properties(topic_alias=2))
    client.publish("", b"2", properties=Properties(topic_alias=2, content_type="c"))
    first, second = pump(client, server)
    assert second.publish.topic == "long/topic"
    assert second.publish.properties == Properties(content_type="c")
    assert first.publish.properties.topic_alias is None


def test_an_alias_above_the_maximum_is_disconnect_0x94() -> None:
    client, server = pair5(topic_alias_maximum=2)
    client.publish("t", b"", properties=Properties(topic_alias=3))
    assert failing(client, server).reason_code == DisconnectCode.TOPIC_ALIAS_INVALID


def test_an_alias_never_set_is_a_protocol_error() -> None:
    client, server = pair5()
    client.publish("", b"", properties=Properties(topic_alias=1))
    assert failing(client, server).reason_code == DisconnectCode.PROTOCOL_ERROR


def test_MQTT_3_3_4_6_a_client_publish_with_a_subscription_identifier_is_refused() -> None:
    client, server = pair5()
    client.publish("t", b"", properties=Properties(subscription_identifiers=(1,)))
    error = failing(client, server)
    assert (error.rule, error.reason_code) == ("MQTT-3.3.4-6", 0x82)


def test_a_packet_over_the_servers_maximum_is_disconnect_0x95() -> None:
    client, server = pair5(max_packet_size=64)
    client.publish("t", b"x" * 100)
    assert failing(client, server).reason_code == DisconnectCode.PACKET_TOO_LARGE


def test_a_malformed_packet_is_disconnect_0x81_and_auth_is_0x82() -> None:
    client, server = pair5()
    client.send_raw(bytes.fromhex("4003000111"))  # PUBACK with an UNSUBACK reason
    assert failing(client, server).reason_code == DisconnectCode.MALFORMED_PACKET
    client, server = pair5()
    client.send(Auth())
    assert failing(client, server).reason_code == DisconnectCode.PROTOCOL_ERROR


def test_a_topic_name_over_the_limits_is_disconnect_0x90_or_a_311_close() -> None:
    client, server = pair5(max_topic_length=8)
    client.publish("a" * 9, b"")
    assert failing(client, server).reason_code == DisconnectCode.TOPIC_NAME_INVALID
    client, server = connected_pair(max_topic_levels=2)
    client.publish("a/b/c", b"")
    server.receive_data(client.data_to_send(), 1.0)
    with pytest.raises(RemoteProtocolError):
        drain(server)
    assert server.data_to_send() == b""


# ---------------------------------------------------------------------- SUBSCRIBE


def test_subscription_options_and_identifier_reach_the_application() -> None:
    client, server = pair5()
    options = (SubscriptionOptions(no_local=True, retain_as_published=True), SubscriptionOptions())
    client.send(Subscribe(1, (("a/#", Q1), ("$share/g/b", Q0)), options,
                          Properties(subscription_identifiers=(7,),
                                     user_properties=(("k", "v"),))))
    (event,) = pump(client, server)
    assert isinstance(event, SubscribeReceived)
    assert event.options == options and event.subscription_identifier == 7
    assert event.properties == Properties(user_properties=(("k", "v"),))
    server.grant(1, (1, 0x9E), reason_string="no shared here")
    flush(server, client)
    assert client.subacks[-1] == SubAck(1, (1, 0x9E), Properties(reason_string="no shared here"))


def test_grant_turns_mqtt5_refusals_into_0x80_for_311() -> None:
    client, server = connected_pair()
    client.subscribe(("a", Q1), ("b", Q1))
    pump(client, server)
    server.grant(1, (0x87, 1))
    flush(server, client)
    assert client.subacks[-1] == SubAck(1, (0x80, 1))


def test_filters_over_the_limits_get_0x8f_in_place() -> None:
    client, server = pair5(max_topic_levels=2)
    client.subscribe(("a/b/c", Q1), ("a", Q1), ("x/y/z", Q0))
    (event,) = pump(client, server)
    assert event.subscriptions == (("a", Q1),)
    server.grant(event.packet_id, (1,))
    flush(server, client)
    assert client.subacks[-1].return_codes == (0x8F, 1, 0x8F)


def test_a_subscribe_of_only_refused_filters_is_answered_by_the_session() -> None:
    client, server = pair5(max_topic_length=3)
    client.subscribe(("long/filter", Q1))
    assert pump(client, server) == []
    assert client.subacks[-1].return_codes == (0x8F,)


def test_unsubscribed_carries_reason_codes() -> None:
    client, server = pair5(max_topic_levels=2)
    client.unsubscribe("a", "b/c/d")
    (event,) = pump(client, server)
    assert isinstance(event, UnsubscribeReceived) and event.topic_filters == ("a",)
    server.unsubscribed(event.packet_id, [0x11])
    flush(server, client)
    assert client.unsubacks[-1] == UnsubAck(event.packet_id, (0x11, 0x8F))


# ---------------------------------------------------------------------- outbound


def test_the_window_is_the_clients_receive_maximum() -> None:
    client, server = pair5(client_props={"receive_maximum": 2}, max_inflight=20)
    client.ack_reason = 0
    server.publish("t", b"1", Q1)
    server.publish("t", b"2", Q2)
    assert not server.can_publish(Q1) and server.can_publish(Q0)
    with pytest.raises(LocalProtocolError):
        server.publish("t", b"3", Q1)
    flush(server, client)
    events = pump(client, server)
    assert [type(e) for e in events] == [DeliveryComplete]  # QoS 2 awaits PUBCOMP
    assert server.can_publish(Q1)


def test_outbound_topic_aliases_stay_within_the_clients_maximum() -> None:
    client, server = pair5(client_props={"topic_alias_maximum": 1})
    for topic in ("a/long/topic", "a/long/topic", "other"):
        server.publish(topic, b"", Q0)
    wire = server.data_to_send()
    flush_packets = client.receive_data(wire)
    assert [p.topic for p in flush_packets] == ["a/long/topic", "", "other"]
    assert [p.properties.topic_alias for p in flush_packets] == [1, 1, None]
    assert [p.topic for p in client.delivered] == ["a/long/topic", "a/long/topic", "other"]


def test_a_message_over_the_clients_maximum_is_dropped_as_delivered() -> None:
    client, server = pair5(client_props={"maximum_packet_size": 64})
    assert server.publish("t", b"x" * 100, Q1) is None
    assert server.data_to_send() == b""
    assert server.statistics().dropped_too_large == 1
    assert server.statistics().outbound_inflight == 0
    assert server.publish("t", b"small", Q1) == 1


def test_an_ack_too_large_for_the_client_loses_its_reason_string() -> None:
    client, server = pair5(client_props={"maximum_packet_size": 16})
    packet_id = client.publish("t", b"", Q1)
    pump(client, server)
    server.acknowledge(packet_id, 0x83, reason_string="x" * 40)
    flush(server, client)
    assert client.received[-1] == PubAck(packet_id, 0x83)


def test_a_client_refusing_a_qos2_message_ends_its_flow() -> None:
    client, server = pair5()
    client.ack_reason = 0x80
    packet_id = server.publish("t", b"", Q2, properties=Properties(content_type="x"))
    flush(server, client)
    (event,) = pump(client, server)
    assert event == DeliveryComplete(packet_id, 0x80)
    assert not any(isinstance(p, PubRel) for p in client.received)
    assert client.delivered[-1].properties.content_type == "x"


def test_disconnect_sends_the_reason_to_mqtt5_and_nothing_to_311() -> None:
    client, server = pair5()
    server.disconnect(DisconnectCode.USE_ANOTHER_SERVER, reason_string="draining",
                      server_reference="gw-2:8883")
    flush(server, client)
    assert client.disconnects == [Disconnect(0x9C, Properties(
        server_reference="gw-2:8883", reason_string="draining"))]
    assert server.state is ConnectionState.CLOSED
    client, server = connected_pair()
    server.disconnect(DisconnectCode.SESSION_TAKEN_OVER)
    assert server.data_to_send() == b"" and server.state is ConnectionState.CLOSED
    with pytest.raises(LocalProtocolError):
        server.disconnect(DisconnectCode.DISCONNECT_WITH_WILL_MESSAGE)


# ---------------------------------------------------------------------- client DISCONNECT


def test_disconnect_with_will_message_asks_for_the_will() -> None:
    client, server = pair5()
    client.send(Disconnect(0x04))
    (event,) = pump(client, server)
    assert event == Disconnected(True, 0x04) and event.publish_will
    assert not Disconnected(True).publish_will and Disconnected(False).publish_will


def test_a_session_expiry_set_at_disconnect_after_0_is_a_protocol_error() -> None:
    client, server = pair5()
    client.send(Disconnect(0, Properties(session_expiry_interval=60)))
    assert failing(client, server).reason_code == DisconnectCode.PROTOCOL_ERROR
    client, server = pair5(client_props={"session_expiry_interval": 10})
    client.send(Disconnect(0, Properties(session_expiry_interval=60)))
    (event,) = pump(client, server)
    assert event.properties.session_expiry_interval == 60


def test_a_server_only_disconnect_reason_from_a_client_is_a_protocol_error() -> None:
    client, server = pair5()
    client.send(Disconnect(0x8E))
    assert failing(client, server).reason_code == DisconnectCode.PROTOCOL_ERROR


def test_a_resumed_session_resends_with_properties_and_no_stale_alias() -> None:
    client, server = pair5(client_props={"topic_alias_maximum": 5})
    client.clean_session = False
    server.publish("t", b"1", Q1, properties=Properties(message_expiry_interval=30))
    state = server.session_state()
    again = SansIOClient(clean_session=False, protocol_level=5)
    again, server2 = connected_pair(again, session_present=True, resume=state)
    (resent,) = [p for p in again.received if not isinstance(p, ConnAck)]
    assert resent.topic == "t" and resent.dup
    assert resent.properties == Properties(message_expiry_interval=30)


def test_the_encoder_refuses_mqtt5_fields_in_a_311_packet() -> None:
    for packet in (PubAck(1, 0x10), Disconnect(0x8E),
                   SubAck(1, (0,), Properties(reason_string="x"))):
        with pytest.raises(LocalProtocolError):
            encode(packet, 4)


def test_a_resumed_session_resends_only_up_to_the_clients_receive_maximum() -> None:
    client, server = pair5()
    client.clean_session = False
    ids = [server.publish("t", bytes([i]), Q1) for i in range(4)]
    state = server.session_state()
    again = SansIOClient(clean_session=False, protocol_level=5,
                         properties=Properties(receive_maximum=2))
    again.ack_reason = 0
    server2 = ServerConnection()
    again.connect()
    server2.receive_data(again.data_to_send(), 0.0)
    drain(server2)
    server2.accept(session_present=True, resume=state)
    flush(server2, again)
    assert [p.packet_id for p in again.delivered] == ids[:2]
    assert not server2.can_publish(Q1)
    events = pump(again, server2)  # the two PUBACKs free two slots: the rest follows
    assert [e.packet_id for e in events] == ids[:2]
    assert [p.packet_id for p in again.delivered] == ids
    pump(again, server2)
    assert server2.statistics().outbound_inflight == 0


def test_what_the_connack_says_is_unavailable_is_enforced() -> None:
    announce = {"properties": Properties(maximum_qos=1, retain_available=0,
                                         wildcard_subscription_available=0,
                                         shared_subscription_available=0,
                                         subscription_identifier_available=0)}
    client, server = pair5(accept=announce)
    assert client.connacks[-1].properties.maximum_qos == 1
    client.subscribe(("a/+", Q1), ("$share/g/a", Q1), ("a", Q1))
    (event,) = pump(client, server)
    assert event.subscriptions == (("a", Q1),)
    server.grant(event.packet_id, (1,))
    flush(server, client)
    assert client.subacks[-1].return_codes == (0xA2, 0x9E, 1)
    for publish, code in (((b"", Q2, False), 0x9B), ((b"", Q1, True), 0x9A)):
        client, server = pair5(accept=announce)
        client.publish("t", *publish)
        assert failing(client, server).reason_code == code
    client, server = pair5(accept=announce)
    client.send(Subscribe(1, (("a", Q1),), properties=Properties(subscription_identifiers=(3,))))
    assert failing(client, server).reason_code == 0xA1


def test_a_connack_too_large_for_the_client_loses_its_user_properties() -> None:
    big = Properties(user_properties=(("k", "v" * 100),), reason_string="hello")
    client, server = pair5(accept={"properties": big},
                           client_props={"maximum_packet_size": 64})
    connack = client.connacks[-1]
    assert connack.properties.user_properties == () and connack.properties.reason_string is None
    assert connack.properties.maximum_packet_size == DEFAULT_MAX_PACKET_SIZE


def test_a_311_subscribe_over_the_topic_limits_closes_without_a_suback() -> None:
    client, server = connected_pair(max_topic_length=8)
    client.subscribe(("short", Q1), ("much/too/long", Q1))
    server.receive_data(client.data_to_send(), 1.0)
    with pytest.raises(RemoteProtocolError):
        drain(server)
    assert server.data_to_send() == b"" and server.state is ConnectionState.ERROR
