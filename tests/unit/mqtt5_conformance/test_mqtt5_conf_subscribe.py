"""MQTT 5.0 normative statements of sections 3.8 to 3.11 (SUBSCRIBE, SUBACK, UNSUBSCRIBE,
UNSUBACK) and the subscription options of 3.3.1, checked on `ServerConnection` with real
bytes. One test per statement; docs/mqtt5-conformance.md maps them."""

from __future__ import annotations

import pytest
from sansio_client import (
    Q0,
    Q1,
    Q2,
    SansIOClient5,
    connected_pair5,
    flush,
    props,
    pump,
    raw,
    utf8,
    violation_after_connect5,
)

from gateway.mqtt import (
    LocalProtocolError,
    PubAck,
    RetainHandling,
    SubAck,
    SubAckCode,
    SubscribeReceived,
    SubscriptionOptions,
    UnsubAck,
    UnsubAckCode,
    UnsubscribeReceived,
)

MALFORMED = 0x81
PROTOCOL_ERROR = 0x82
SMALL = 24
PROSE = {"reason_string": "not allowed by the jail: " + "x" * 40,
         "user_properties": [("k", "v" * 40)]}


def subscribe5(*entries: tuple[bytes, int], packet_id: int = 1, first: int = 0x82) -> bytes:
    """An MQTT 5 SUBSCRIBE built by hand: (filter, options byte) entries."""
    body = packet_id.to_bytes(2, "big") + b"\x00"
    body += b"".join(utf8(f) + bytes((o,)) for f, o in entries)
    return raw(first, body)


def unsubscribe5(*filters: bytes, packet_id: int = 1, first: int = 0xA2) -> bytes:
    return raw(first, packet_id.to_bytes(2, "big") + b"\x00" + b"".join(utf8(f) for f in filters))


def subscribed(*subscriptions, options=(), client=None):
    client, server = connected_pair5(client)
    packet_id = client.subscribe(*subscriptions, options=options)
    (event,) = pump(client, server)
    assert isinstance(event, SubscribeReceived) and event.packet_id == packet_id
    return client, server, event


def test_MQTT_3_3_1_9_10_11_retain_handling_reaches_the_server():
    handlings = [SubscriptionOptions(retain_handling=h) for h in RetainHandling]
    client, server, event = subscribed(("a", Q0), ("b", Q1), ("c", Q2), options=handlings)
    assert [o.retain_handling for o in event.options] == list(RetainHandling)


def test_MQTT_3_3_1_12_13_retain_as_published_reaches_the_server():
    options = [SubscriptionOptions(retain_as_published=v) for v in (False, True)]
    client, server, event = subscribed(("a", Q0), ("b", Q0), options=options)
    assert [o.retain_as_published for o in event.options] == [False, True]


def test_MQTT_3_8_1_1_subscribe_with_wrong_flags_is_malformed():
    for first in (0x80, 0x83, 0x8A):
        violation_after_connect5(subscribe5((b"a", 0), first=first), reason=MALFORMED)


def test_MQTT_3_8_3_1_subscribe_filters_must_be_utf8():
    violation_after_connect5(subscribe5((b"a/\xff", 0)), reason=MALFORMED)
    violation_after_connect5(subscribe5((b"a/\x00", 0)), reason=MALFORMED)


def test_MQTT_3_8_3_2_subscribe_without_filters_is_a_protocol_error():
    violation_after_connect5(subscribe5(), reason=PROTOCOL_ERROR, rule="MQTT-3.8.3-2")


def test_MQTT_3_8_3_3_no_local_reaches_the_server():
    options = [SubscriptionOptions(no_local=True), SubscriptionOptions()]
    client, server, event = subscribed(("a", Q1), ("b", Q1), options=options)
    assert [o.no_local for o in event.options] == [True, False]


def test_MQTT_3_8_3_4_no_local_on_a_shared_subscription_is_a_protocol_error():
    violation_after_connect5(subscribe5((b"$share/g/a", 0x04)), reason=PROTOCOL_ERROR,
                            rule="MQTT-3.8.3-4")
    client, server, event = subscribed(("$share/g/a", Q1))  # without no local: fine
    assert event.subscriptions == (("$share/g/a", Q1),)


def test_MQTT_3_8_3_5_reserved_subscription_option_bits_are_malformed():
    for options in (0x40, 0x80, 0xC1):
        violation_after_connect5(subscribe5((b"a", options)), reason=MALFORMED,
                                rule="MQTT-3.8.3-5")
    violation_after_connect5(subscribe5((b"a", 0x30)))  # retain handling 3: protocol error


def test_MQTT_3_8_4_1_subscribe_is_answered_with_suback():
    client, server, event = subscribed(("a/#", Q1))
    assert client.subacks == []  # the application decides first
    server.grant(event.packet_id, [1])
    assert [type(p) for p in flush(server, client)] == [SubAck]


def test_MQTT_3_8_4_2_suback_has_the_subscribe_identifier():
    client, server = connected_pair5()
    ids = [client.subscribe(("a", Q0)) for _ in range(3)]
    events = pump(client, server)
    for event in reversed(events):
        server.grant(event.packet_id, [0])
    assert [p.packet_id for p in flush(server, client)] == list(reversed(ids))


def test_MQTT_3_8_4_5_many_filters_get_one_suback():
    client, server, event = subscribed(("a", Q0), ("b/+", Q1), ("c/#", Q2))
    assert event.subscriptions == (("a", Q0), ("b/+", Q1), ("c/#", Q2))
    server.grant(event.packet_id, [0, 1, 2])
    assert flush(server, client) == [SubAck(event.packet_id, (0, 1, 2))]


def test_MQTT_3_8_4_6_suback_has_one_reason_code_per_filter():
    client, server, event = subscribed(("a", Q0), ("b", Q1))
    for wrong in ([0], [0, 1, 1]):
        with pytest.raises(LocalProtocolError):
            server.grant(event.packet_id, wrong)
    server.grant(event.packet_id, [0, SubAckCode.NOT_AUTHORIZED])
    (suback,) = flush(server, client)
    assert suback.return_codes == (0, 0x87)


def test_MQTT_3_8_4_7_reason_code_is_granted_qos_or_failure():
    failures = [c for c in SubAckCode if c >= 0x80]
    client, server, event = subscribed(*[(f"f/{i}", Q2) for i in range(3 + len(failures))])
    server.grant(event.packet_id, [0, 1, 2, *failures])
    (suback,) = flush(server, client)
    assert suback.return_codes == (0, 1, 2, *failures)
    client, server, event = subscribed(("a", Q2))
    for not_a_code in (3, 0x10, 0x11, 0x81, 0x92):
        with pytest.raises((LocalProtocolError, ValueError)):
            server.grant(event.packet_id, [not_a_code])


def test_MQTT_3_8_4_8_grant_never_exceeds_the_request():
    client, server, event = subscribed(("a", Q0), ("b", Q1))
    with pytest.raises(LocalProtocolError):
        server.grant(event.packet_id, [1, 1])
    with pytest.raises(LocalProtocolError):
        server.grant(event.packet_id, [0, 2])
    server.grant(event.packet_id, [0, 0])
    assert flush(server, client)[0].return_codes == (0, 0)


def test_MQTT_3_9_2_1_2_suback_drops_reason_string_and_user_properties_over_client_maximum():
    small = SansIOClient5(properties=props(maximum_packet_size=SMALL))
    client, server, event = subscribed(("a", Q1), client=small)
    server.grant(event.packet_id, [SubAckCode.NOT_AUTHORIZED], **PROSE)
    data = server.data_to_send()
    assert len(data) <= SMALL
    (suback,) = client.receive_data(data)
    assert suback.return_codes == (0x87,)
    assert not suback.properties.reason_string and not suback.properties.user_properties


def test_MQTT_3_9_3_1_reason_codes_follow_filter_order():
    client, server, event = subscribed(("x", Q2), ("y", Q0), ("z", Q1))
    server.grant(event.packet_id, [2, SubAckCode.TOPIC_FILTER_INVALID, 1])
    assert flush(server, client)[0].return_codes == (2, 0x8F, 1)


def test_MQTT_3_9_3_2_suback_codes_come_from_the_table():
    client, server, event = subscribed(*[(f"f/{i}", Q2) for i in range(len(SubAckCode))])
    server.grant(event.packet_id, list(SubAckCode))
    (suback,) = flush(server, client)
    assert set(suback.return_codes) == set(SubAckCode)


def test_MQTT_3_10_1_1_unsubscribe_with_wrong_flags_is_malformed():
    for first in (0xA0, 0xA3, 0xAA):
        violation_after_connect5(unsubscribe5(b"a", first=first), reason=MALFORMED)


def test_MQTT_3_10_3_1_unsubscribe_filters_must_be_utf8():
    violation_after_connect5(unsubscribe5(b"a/\xc3"), reason=MALFORMED)


def test_MQTT_3_10_3_2_unsubscribe_without_filters_is_a_protocol_error():
    violation_after_connect5(unsubscribe5(), reason=PROTOCOL_ERROR, rule="MQTT-3.10.3-2")


def test_MQTT_3_10_4_3_unsubscribe_does_not_abort_messages_in_flight():
    client, server = connected_pair5(SansIOClient5(auto_ack=False))
    packet_id = server.publish("a/1", b"x", Q1)
    flush(server, client)
    unsub_id = client.unsubscribe("a/#")
    (event,) = pump(client, server)
    server.unsubscribed(unsub_id)
    flush(server, client)
    assert [p.packet_id for p in server.session_state().outbound] == [packet_id]
    client.send(PubAck(packet_id))
    (done,) = pump(client, server)
    assert done.packet_id == packet_id


def test_MQTT_3_10_4_4_unsubscribe_is_answered_with_unsuback():
    client, server = connected_pair5()
    unsub_id = client.unsubscribe("a/#")
    (event,) = pump(client, server)
    assert event == UnsubscribeReceived(unsub_id, ("a/#",))
    assert client.unsubacks == []
    server.unsubscribed(unsub_id)
    assert [type(p) for p in flush(server, client)] == [UnsubAck]


def test_MQTT_3_10_4_5_unsuback_has_the_id_even_when_nothing_existed():
    client, server = connected_pair5()
    unsub_id = client.unsubscribe("never/subscribed")
    pump(client, server)
    server.unsubscribed(unsub_id, [UnsubAckCode.NO_SUBSCRIPTION_EXISTED])
    assert flush(server, client) == [UnsubAck(unsub_id, (0x11,))]


def test_MQTT_3_10_4_6_many_filters_get_one_unsuback():
    client, server = connected_pair5()
    unsub_id = client.unsubscribe("a", "b/+", "c/#")
    (event,) = pump(client, server)
    assert event.topic_filters == ("a", "b/+", "c/#")
    server.unsubscribed(unsub_id)
    assert flush(server, client) == [UnsubAck(unsub_id, (0, 0, 0))]


def test_MQTT_3_11_2_1_2_unsuback_drops_reason_string_and_user_properties_over_client_maximum():
    client = SansIOClient5(properties=props(maximum_packet_size=SMALL))
    client, server = connected_pair5(client)
    unsub_id = client.unsubscribe("a")
    pump(client, server)
    server.unsubscribed(unsub_id, [UnsubAckCode.NOT_AUTHORIZED], **PROSE)
    data = server.data_to_send()
    assert len(data) <= SMALL
    (unsuback,) = client.receive_data(data)
    assert unsuback.reason_codes == (0x87,)
    assert not unsuback.properties.reason_string and not unsuback.properties.user_properties


def test_MQTT_3_11_3_1_unsuback_codes_follow_filter_order():
    client, server = connected_pair5()
    unsub_id = client.unsubscribe("x", "y", "z")
    pump(client, server)
    server.unsubscribed(unsub_id, [0x11, 0x00, 0x87])
    assert flush(server, client) == [UnsubAck(unsub_id, (0x11, 0x00, 0x87))]


def test_MQTT_3_11_3_2_unsuback_codes_come_from_the_table():
    client, server = connected_pair5()
    unsub_id = client.unsubscribe("x", "y")
    pump(client, server)
    for wrong in ([0x00], [0x00, 0x10], [0x00, 0x8E], [0x00, 0x02]):
        with pytest.raises((LocalProtocolError, ValueError)):
            server.unsubscribed(unsub_id, wrong)
    assert server.data_to_send() == b""
    server.unsubscribed(unsub_id, [UnsubAckCode.SUCCESS, UnsubAckCode.TOPIC_FILTER_INVALID])
    assert [type(p) for p in flush(server, client)] == [UnsubAck]
    assert client.unsubacks[0].reason_codes == (0x00, 0x8F)
