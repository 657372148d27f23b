"""ServerConnection behaviour beyond the numbered statements: framing across calls, the
end of the stream, our own misuse, identifier bookkeeping, windows and limits."""

from __future__ import annotations

import pytest
from sansio_client import SansIOClient, connected_pair, drain, flush, pump

from gateway.mqtt import (
    ConnAck,
    Connect,
    ConnectionState,
    ConnectionStatistics,
    ConnectReceived,
    ConnectReturnCode,
    DeliveryComplete,
    Disconnected,
    LocalProtocolError,
    PacketTooLarge,
    PingReq,
    ProtocolSessionState,
    PubAck,
    PubComp,
    Publish,
    PublishReceived,
    PubRec,
    PubRel,
    QoS,
    RemoteProtocolError,
    ServerConnection,
)
from gateway.mqtt.codec import decode, encode

Q0, Q1, Q2 = QoS.AT_MOST_ONCE, QoS.AT_LEAST_ONCE, QoS.EXACTLY_ONCE


def stream() -> bytes:
    packets = [
        Connect("device-1", keepalive=30),
        Publish("a/b", b"x" * 300, Q1, packet_id=1),  # a two-byte remaining length
        PingReq(),
        Publish("a/c", b"", Q2, packet_id=2),
        Publish("a/d", b"zero", Q0),
    ]
    return b"".join(encode(p) for p in packets)


def events_of(chunks: list[bytes]) -> tuple[list, bytes]:
    server = ServerConnection()
    events = []
    for chunk in chunks:
        server.receive_data(chunk, 0.0)
        for event in drain(server):
            events.append(event)
            if isinstance(event, ConnectReceived):
                server.accept()
                events.extend(drain(server))
    return events, server.data_to_send()


def test_many_packets_in_one_call_and_byte_by_byte_give_the_same_events():
    data = stream()
    whole = events_of([data])
    assert [type(e).__name__ for e in whole[0]] == ["ConnectReceived"] + ["PublishReceived"] * 3
    assert events_of([data[i : i + 1] for i in range(len(data))]) == whole


def test_eof_ends_the_connection_without_grace():
    client, server = connected_pair()
    server.receive_data(encode(PingReq()), 1.0)
    server.receive_data(b"", 2.0)
    assert drain(server) == [Disconnected(graceful=False)]
    assert server.state is ConnectionState.CLOSED
    assert server.next_event() is None


def test_eof_in_the_middle_of_a_packet_is_an_ungraceful_end():
    client, server = connected_pair()
    server.receive_data(encode(Publish("a", b"xyz", Q1, packet_id=3))[:-1], 1.0)
    server.receive_data(b"", 1.0)
    assert drain(server) == [Disconnected(graceful=False)]


def test_eof_before_connect_closes_quietly():
    server = ServerConnection()
    server.receive_data(b"", 0.0)
    assert server.next_event() == Disconnected(graceful=False)
    assert server.state is ConnectionState.CLOSED
    assert server.data_to_send() == b""


def test_data_after_eof_is_our_misuse():
    server = ServerConnection()
    server.receive_data(encode(Connect("d")), 0.0)
    server.receive_data(b"", 0.0)
    with pytest.raises(LocalProtocolError):
        server.receive_data(b"x", 0.0)


def test_next_event_before_answering_connect_is_our_misuse():
    server = ServerConnection()
    server.receive_data(encode(Connect("d")) + encode(PingReq()), 0.0)
    assert isinstance(server.next_event(), ConnectReceived)
    assert server.state is ConnectionState.CONNECT_RECEIVED
    with pytest.raises(LocalProtocolError):
        server.next_event()
    server.accept()
    assert server.next_event() is None
    assert [type(p).__name__ for p in SansIOClient().receive_data(server.data_to_send())] == [
        "ConnAck",
        "PingResp",
    ]


def test_refuse_with_accepted_code_is_our_misuse():
    server = ServerConnection()
    server.receive_data(encode(Connect("d")), 0.0)
    drain(server)
    with pytest.raises(LocalProtocolError):
        server.refuse(ConnectReturnCode.ACCEPTED)
    assert server.state is ConnectionState.CONNECT_RECEIVED


def test_resume_needs_session_present():
    server = ServerConnection()
    server.receive_data(encode(Connect("d", clean_session=False)), 0.0)
    drain(server)
    with pytest.raises(LocalProtocolError):
        server.accept(resume=ProtocolSessionState())
    with pytest.raises(LocalProtocolError):
        server.accept(session_present=True, resume=ProtocolSessionState(next_packet_id=0))
    server.accept(session_present=True, resume=ProtocolSessionState())
    assert decode(server.data_to_send()) == ConnAck(ConnectReturnCode.ACCEPTED, True)


@pytest.mark.parametrize(
    "outbound",
    [
        (Publish("t", b"x", Q0),),
        (Publish("t/+", b"x", Q1, packet_id=1),),
        (PubRel(1), PubRel(1)),
        (PubAck(1),),
    ],
)
def test_a_bad_resumed_session_is_refused_before_anything_is_queued(outbound):
    server = ServerConnection()
    server.receive_data(encode(Connect("d", clean_session=False)), 0.0)
    drain(server)
    with pytest.raises(LocalProtocolError):
        server.accept(session_present=True, resume=ProtocolSessionState(outbound))
    assert server.state is ConnectionState.CONNECT_RECEIVED
    assert server.data_to_send() == b""


def test_acknowledging_an_unknown_message_is_our_misuse_and_changes_nothing():
    client, server = connected_pair()
    client.publish("a", b"x", Q1)
    pump(client, server)
    with pytest.raises(LocalProtocolError):
        server.acknowledge(99)
    assert server.statistics().inbound_unacknowledged == 1
    assert server.data_to_send() == b""


def test_acknowledging_after_the_connection_ended_records_qos2_and_sends_nothing():
    client, server = connected_pair(SansIOClient(clean_session=False))
    q1 = client.publish("a", b"1", Q1)
    q2 = client.publish("a", b"2", Q2)
    pump(client, server)
    server.receive_data(b"", 1.0)
    assert drain(server) == [Disconnected(graceful=False)]
    server.acknowledge(q1)
    server.acknowledge(q2)
    assert server.data_to_send() == b""
    state = server.session_state()
    assert state.inbound_awaiting_pubrel == {q2}
    # On resume the client re-sends its QoS 2 PUBLISH: answered, not delivered again.
    client.new_connection()
    client2, server2 = connected_pair(client, session_present=True, resume=state)
    client2.resend_unacknowledged()
    events = pump(client2, server2)
    assert events == [PublishReceived(Publish("a", b"1", Q1, dup=True, packet_id=q1))]
    assert PubRec(q2) in client2.received


def test_qos1_resent_before_acknowledgement_is_delivered_again():
    client, server = connected_pair()
    client.send(Publish("a", b"x", Q1, packet_id=4))
    client.send(Publish("a", b"x", Q1, dup=True, packet_id=4))
    events = pump(client, server)
    assert len(events) == 2  # at least once (section 4.3.2)
    server.acknowledge(4)
    with pytest.raises(LocalProtocolError):
        server.acknowledge(4)
    assert flush(server, client) == [PubAck(4)]


def test_inflight_window_is_enforced_and_qos0_passes():
    client, server = connected_pair(max_inflight=2)
    assert server.can_publish(Q1)
    a = server.publish("t", b"1", Q1)
    server.publish("t", b"2", Q2)
    assert not server.can_publish(Q1) and not server.can_publish(Q2)
    assert server.can_publish(Q0)
    with pytest.raises(LocalProtocolError):
        server.publish("t", b"3", Q1)
    server.publish("t", b"0", Q0)
    server.receive_data(encode(PubAck(a)), 1.0)
    assert drain(server) == [DeliveryComplete(a)]
    assert server.can_publish(Q1)


def test_publish_to_an_invalid_topic_leaves_no_trace():
    client, server = connected_pair()
    with pytest.raises(LocalProtocolError):
        server.publish("a/+", b"x", Q1)
    assert server.statistics().outbound_inflight == 0
    assert server.data_to_send() == b""
    assert server.publish("a", b"x", Q1) == 1


def test_outbound_packet_ids_wrap_and_skip_ids_in_use():
    server = ServerConnection()
    server.receive_data(encode(Connect("d", clean_session=False)), 0.0)
    drain(server)
    held = Publish("t", b"held", Q1, packet_id=1)
    server.accept(session_present=True, resume=ProtocolSessionState((held,), frozenset(), 0xFFFF))
    assert server.publish("t", b"x", Q1) == 0xFFFF
    assert server.publish("t", b"y", Q1) == 2  # 1 is still in flight


def test_unknown_acknowledgements_are_tolerated():
    client, server = connected_pair()
    server.receive_data(encode(PubAck(7)) + encode(PubComp(8)), 1.0)
    assert drain(server) == []
    assert server.data_to_send() == b""
    server.receive_data(encode(PubRec(9)) + encode(PubRel(10)), 1.0)
    assert drain(server) == []
    assert SansIOClient().receive_data(server.data_to_send()) == [PubRel(9), PubComp(10)]


def test_duplicate_pubrec_gets_pubrel_again():
    client, server = connected_pair()
    packet_id = server.publish("t", b"x", Q2)
    server.data_to_send()
    server.receive_data(encode(PubRec(packet_id)) * 2, 1.0)
    assert drain(server) == []
    assert SansIOClient().receive_data(server.data_to_send()) == [PubRel(packet_id)] * 2


@pytest.mark.parametrize(
    "qos, wrong",
    [(Q1, PubRec), (Q1, PubComp), (Q2, PubAck), (Q2, PubComp)],
)
def test_acknowledgement_of_the_wrong_kind_is_a_violation(qos, wrong):
    client, server = connected_pair()
    packet_id = server.publish("t", b"x", qos)
    server.receive_data(encode(wrong(packet_id)), 1.0)
    with pytest.raises(RemoteProtocolError) as info:
        drain(server)
    assert info.value.rule == "MQTT-4.8.0-1"
    assert server.state is ConnectionState.ERROR


def test_pubrel_before_our_pubrec_is_a_violation():
    client, server = connected_pair()
    client.send(Publish("t", b"x", Q2, packet_id=3))
    client.send(PubRel(3))
    server.receive_data(client.data_to_send(), 1.0)
    assert isinstance(server.next_event(), PublishReceived)
    with pytest.raises(RemoteProtocolError):
        server.next_event()


def test_packet_id_reused_at_another_qos_while_in_flight_is_a_violation():
    client, server = connected_pair()
    client.send(Publish("t", b"x", Q2, packet_id=3))
    client.send(Publish("t", b"y", Q1, packet_id=3))
    server.receive_data(client.data_to_send(), 1.0)
    server.next_event()
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.rule == "MQTT-2.3.1-2"


def test_inbound_window_is_bounded():
    client, server = connected_pair(max_inbound_inflight=3)
    for _ in range(3):
        client.publish("t", b"x", Q1)
    assert len(pump(client, server)) == 3
    client.publish("t", b"x", Q2)
    server.receive_data(client.data_to_send(), 1.0)
    with pytest.raises(RemoteProtocolError):
        drain(server)
    assert server.state is ConnectionState.ERROR


def test_oversized_packet_is_refused_from_its_fixed_header():
    client, server = connected_pair(max_packet_size=1024)
    server.receive_data(b"\x30\xff\xff\xff\x7f", 1.0)  # announces 256 MB, sends none of it
    with pytest.raises(PacketTooLarge):
        server.next_event()
    assert server.state is ConnectionState.ERROR


def test_oversized_connect_gets_no_connack():
    server = ServerConnection(max_packet_size=64)
    server.receive_data(encode(Connect("x" * 100)), 0.0)
    with pytest.raises(PacketTooLarge):
        server.next_event()
    assert server.data_to_send() == b""


def test_keepalive_deadline_only_while_connected():
    server = ServerConnection()
    assert server.keepalive_deadline() is None
    server.receive_data(encode(Connect("d", keepalive=10)), 5.0)
    drain(server)
    assert server.keepalive_deadline() == 20.0  # CONNECT counts as a packet
    server.accept()
    server.close()
    assert server.keepalive_deadline() is None


def test_keepalive_counts_complete_packets_not_bytes():
    client, server = connected_pair(SansIOClient(keepalive=10), now=0.0)
    ping = encode(PingReq())
    server.receive_data(ping[:1], 9.0)
    drain(server)
    assert server.keepalive_deadline() == 15.0
    server.receive_data(ping[1:], 12.0)
    drain(server)
    assert server.keepalive_deadline() == 27.0
    assert server.keepalive_deadline(factor=2.0) == 32.0


def test_close_keeps_error_and_session_state():
    client, server = connected_pair()
    packet_id = server.publish("t", b"x", Q1)
    server.receive_data(b"\x00\x00", 1.0)
    with pytest.raises(RemoteProtocolError):
        server.next_event()
    server.close()
    assert server.state is ConnectionState.ERROR
    assert [p.packet_id for p in server.session_state().outbound] == [packet_id]


def test_statistics_report_queue_sizes():
    client, server = connected_pair()
    server.publish("t", b"x", Q1)
    client.publish("a", b"1", Q1)
    client.publish("a", b"2", Q2)
    server.receive_data(client.data_to_send(), 1.0)
    events = drain(server)
    server.acknowledge(events[1].publish.packet_id)
    stats = server.statistics()
    assert stats == ConnectionStatistics(
        state=ConnectionState.CONNECTED,
        outbound_inflight=1,
        inbound_unacknowledged=1,
        inbound_awaiting_pubrel=1,
        bytes_to_send=len(server.data_to_send()),
    )


@pytest.mark.parametrize(
    "options",
    [
        {"max_inflight": 0},
        {"max_inflight": 0x10000},
        {"max_inbound_inflight": 0},
        {"max_client_id_length": 22},
    ],
)
def test_impossible_limits_are_refused(options):
    with pytest.raises(ValueError):
        ServerConnection(**options)


def test_outbound_bytes_batch_until_drained():
    client, server = connected_pair()
    client.publish("a", b"1", Q1)
    client.publish("a", b"2", Q1)
    for event in pump(client, server):
        server.acknowledge(event.publish.packet_id)
    assert server.data_to_send() == encode(PubAck(1)) + encode(PubAck(2))
    assert server.data_to_send() == b""
