"""MQTT 5.0 normative statements of sections 3.4 to 3.7 (PUBACK, PUBREC, PUBREL, PUBCOMP),
checked on `ServerConnection` with real bytes. One test per statement;
docs/mqtt5-conformance.md maps them."""

from __future__ import annotations

import pytest
from sansio_client import (
    Q1,
    Q2,
    SansIOClient5,
    connected_pair5,
    encode5,
    flush,
    props,
    pump,
    violation_after_connect5,
)

from gateway.mqtt import (
    LocalProtocolError,
    PubAck,
    PubAckCode,
    PubComp,
    PubRec,
    PubRel,
    PubRelCode,
)

SMALL = 24  # a client Maximum Packet Size with room for an acknowledgement, not for prose
PROSE = {"reason_string": "payload failed validation: " + "x" * 40,
         "user_properties": [("rule", "temperature in -40..85"), ("k", "v" * 30)]}


def inbound(qos, client: SansIOClient5 | None = None, **server_options):
    """A connected pair and one inbound message of `qos` awaiting acknowledge()."""
    client, server = connected_pair5(client, **server_options)
    client.publish("t", b"x", qos)
    (event,) = pump(client, server)
    return client, server, event.publish.packet_id


def test_MQTT_3_4_2_1_puback_reason_codes_come_from_the_table():
    for reason in PubAckCode:
        client, server, packet_id = inbound(Q1)
        server.acknowledge(packet_id, reason)
        assert flush(server, client) == [PubAck(packet_id, reason)]
    for not_a_puback_code in (0x01, 0x11, 0x81, 0x8F, 0x92, 0x100):
        client, server, packet_id = inbound(Q1)
        with pytest.raises((LocalProtocolError, ValueError)):
            server.acknowledge(packet_id, not_a_puback_code)
        assert server.data_to_send() == b""
    # from the client, a code outside the table is malformed
    violation_after_connect5(bytes((0x40, 4, 0, 1, 0x92, 0)), reason=0x81)


def test_MQTT_3_4_2_2_3_puback_drops_reason_string_and_user_properties_over_client_maximum():
    client = SansIOClient5(properties=props(maximum_packet_size=SMALL))
    client, server, packet_id = inbound(Q1, client)
    server.acknowledge(packet_id, PubAckCode.PAYLOAD_FORMAT_INVALID, **PROSE)
    data = server.data_to_send()
    assert len(data) <= SMALL
    (ack,) = client.receive_data(data)
    assert (ack.packet_id, ack.reason_code) == (packet_id, 0x99)
    assert not ack.properties.reason_string and not ack.properties.user_properties
    client, server, packet_id = inbound(Q1)  # room enough: the reason string goes
    server.acknowledge(packet_id, PubAckCode.PAYLOAD_FORMAT_INVALID, **PROSE)
    (ack,) = flush(server, client)
    assert ack.properties.reason_string == PROSE["reason_string"]


def test_MQTT_3_5_2_1_pubrec_reason_codes_come_from_the_table():
    for reason in PubAckCode:
        client, server, packet_id = inbound(Q2)
        server.acknowledge(packet_id, reason)
        assert flush(server, client)[0] == PubRec(packet_id, reason)
    client, server, packet_id = inbound(Q2)
    with pytest.raises((LocalProtocolError, ValueError)):
        server.acknowledge(packet_id, PubRelCode.PACKET_IDENTIFIER_NOT_FOUND)
    # from the client, a code outside the table is malformed
    violation_after_connect5(bytes((0x50, 4, 0, 1, 0x92, 0)), reason=0x81)


def test_MQTT_3_5_2_2_3_pubrec_drops_reason_string_and_user_properties_over_client_maximum():
    client = SansIOClient5(properties=props(maximum_packet_size=SMALL))
    client, server, packet_id = inbound(Q2, client)
    server.acknowledge(packet_id, PubAckCode.NOT_AUTHORIZED, **PROSE)
    data = server.data_to_send()
    assert len(data) <= SMALL
    (rec,) = client.receive_data(data)
    assert (type(rec), rec.reason_code) == (PubRec, 0x87)
    assert not rec.properties.reason_string and not rec.properties.user_properties


def test_MQTT_3_6_1_1_pubrel_with_wrong_flags_is_malformed():
    for first in (0x60, 0x63, 0x6A):
        violation_after_connect5(bytes((first, 2, 0, 1)), reason=0x81)


def test_MQTT_3_6_2_1_pubrel_reason_codes_come_from_the_table():
    client = SansIOClient5(auto_ack=False)
    client, server = connected_pair5(client)
    packet_id = server.publish("t", b"x", Q2)
    flush(server, client)
    client.send(PubRec(packet_id))
    client.send(PubRec(999))  # an identifier the server does not know
    pump(client, server)
    pubrels = [p for p in client.received if isinstance(p, PubRel)]
    assert pubrels[0] == PubRel(packet_id, PubRelCode.SUCCESS)
    assert pubrels[1].packet_id == 999
    assert pubrels[1].reason_code in (PubRelCode.SUCCESS,
                                      PubRelCode.PACKET_IDENTIFIER_NOT_FOUND)
    assert {p.reason_code for p in pubrels} <= set(PubRelCode)
    # from the client, a code outside the table is malformed
    violation_after_connect5(bytes((0x62, 4, 0, 1, 0x10, 0)), reason=0x81)


def test_MQTT_3_6_2_2_3_pubrel_never_exceeds_the_client_maximum():
    client = SansIOClient5(properties=props(maximum_packet_size=SMALL), auto_ack=False)
    client, server = connected_pair5(client)
    packet_id = server.publish("t", b"x", Q2)
    flush(server, client)
    client.send(PubRec(packet_id))
    server.receive_data(client.data_to_send(), 1.0)
    assert server.next_event() is None
    data = server.data_to_send()
    assert len(data) <= SMALL
    assert client.receive_data(data) == [PubRel(packet_id)]


def test_MQTT_3_7_2_1_pubcomp_reason_codes_come_from_the_table():
    client, server, packet_id = inbound(Q2)
    server.acknowledge(packet_id)
    pump(client, server)  # PUBREC out, the client's PUBREL in
    pump(client, server)
    client.send(PubRel(4242))  # never seen
    pump(client, server)
    pubcomps = [p for p in client.received if isinstance(p, PubComp)]
    assert pubcomps[0] == PubComp(packet_id, PubRelCode.SUCCESS)
    assert pubcomps[1].packet_id == 4242
    assert pubcomps[1].reason_code in (PubRelCode.SUCCESS,
                                       PubRelCode.PACKET_IDENTIFIER_NOT_FOUND)
    # from the client, a code outside the table is malformed
    violation_after_connect5(bytes((0x70, 4, 0, 1, 0x87, 0)), reason=0x81)


def test_MQTT_3_7_2_2_3_pubcomp_never_exceeds_the_client_maximum():
    client = SansIOClient5(properties=props(maximum_packet_size=SMALL))
    client, server, packet_id = inbound(Q2, client)
    server.acknowledge(packet_id)
    flush(server, client)
    server.receive_data(client.data_to_send(), 1.0)
    assert server.next_event() is None
    data = server.data_to_send()
    assert len(data) <= SMALL
    assert client.receive_data(data) == [PubComp(packet_id)]
    assert encode5(PubComp(packet_id)) == bytes((0x70, 2)) + packet_id.to_bytes(2, "big")
