"""Properties of ServerConnection over generated input (Hypothesis).

- Random bytes, before or after CONNECT, never raise anything but `RemoteProtocolError`,
  and an error always leaves the state ERROR.
- Every packet of every type, in every state, yields either the transition the table
  allows or a `RemoteProtocolError` and ERROR (h2's state x input property).
- Any split of a valid client byte stream yields the same events and the same answers.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sansio_client import connect_bytes
from strategies import client_packets, packets, publishes, subscribes, unsubscribes

from gateway.mqtt import (
    SUBACK_FAILURE,
    ConnAck,
    Connect,
    ConnectionState,
    ConnectReceived,
    Disconnected,
    LocalProtocolError,
    PacketType,
    PingReq,
    PublishReceived,
    QoS,
    RemoteProtocolError,
    ServerConnection,
    SubscribeReceived,
    UnsubscribeReceived,
    _state,
)
from gateway.mqtt.codec import encode
from gateway.mqtt.packets import PACKET_TYPE

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def answer(server: ServerConnection, event: object) -> None:
    """A well-behaved application: accepts, acknowledges, grants, unsubscribes at once."""
    match event:
        case ConnectReceived():
            server.accept()
        case PublishReceived(publish=publish) if publish.qos > QoS.AT_MOST_ONCE:
            server.acknowledge(publish.packet_id)
        case SubscribeReceived(packet_id=packet_id, subscriptions=subscriptions):
            server.grant(
                packet_id, [SUBACK_FAILURE if f.startswith("#") else q for f, q in subscriptions]
            )
        case UnsubscribeReceived(packet_id=packet_id):
            server.unsubscribed(packet_id)


def run(server: ServerConnection, chunks: list[bytes], *, eof: bool = True) -> list[object]:
    """Feed chunks, answering every event; return the events (and the error, if any)."""
    seen: list[object] = []
    try:
        for i, chunk in enumerate(chunks + ([b""] if eof else [])):
            server.receive_data(chunk, float(i))
            while (event := server.next_event()) is not None:
                seen.append(event)
                answer(server, event)
    except RemoteProtocolError as exc:
        assert server.state is ConnectionState.ERROR
        seen.append(("error", exc.rule, str(exc)))
    return seen


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    # Never an empty chunk: receive_data(b"") means EOF.
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


# ---------------------------------------------------------------------- random bytes


@SETTINGS
@given(
    after_connect=st.booleans(),
    data=st.binary(max_size=300),
    cuts=st.lists(st.integers(min_value=0), max_size=8),
)
def test_random_bytes_raise_only_remote_protocol_errors(after_connect, data, cuts):
    server = ServerConnection(max_packet_size=4096)
    prefix = connect_bytes() if after_connect else b""
    events = run(server, split(prefix + data, cuts))
    assert server.state in (ConnectionState.CLOSED, ConnectionState.ERROR)
    if events and isinstance(events[-1], tuple):
        # After an error the server stays in ERROR and only re-raises.
        with pytest.raises(RemoteProtocolError):
            server.next_event()


@SETTINGS
@given(st.lists(client_packets, max_size=12))
def test_any_sequence_of_valid_packets_raises_only_remote_protocol_errors(sequence):
    server = ServerConnection()
    data = b"".join(encode(p) for p in [Connect("device-1"), *sequence])
    events = run(server, [data])
    assert isinstance(events[0], ConnectReceived)
    last = events[-1]
    assert isinstance(last, (tuple, Disconnected))


# ---------------------------------------------------------------------- state x packet


def server_in(state: ConnectionState) -> ServerConnection:
    server = ServerConnection()
    if state is ConnectionState.AWAITING_CONNECT:
        return server
    server.receive_data(encode(Connect("device-1")), 0.0)
    assert isinstance(server.next_event(), ConnectReceived)
    if state is ConnectionState.CONNECT_RECEIVED:
        return server
    server.accept()
    # Some state for acknowledgements to find: one QoS 1 and one QoS 2 message out.
    server.publish("t", b"x", QoS.AT_LEAST_ONCE)
    server.publish("t", b"y", QoS.EXACTLY_ONCE)
    if state is ConnectionState.CLOSED:
        server.close()
    elif state is ConnectionState.ERROR:
        server.receive_data(encode(ConnAck()), 0.0)
        with pytest.raises(RemoteProtocolError):
            server.next_event()
    server.data_to_send()
    assert server.state is state
    return server


@settings(max_examples=400, deadline=None)
@given(state=st.sampled_from(list(ConnectionState)), packet=packets)
def test_every_packet_in_every_state_is_a_legal_transition_or_an_error(state, packet):
    server = server_in(state)
    packet_type = PACKET_TYPE[type(packet)]
    server.receive_data(encode(packet), 1.0)
    if state is ConnectionState.CONNECT_RECEIVED:
        with pytest.raises(LocalProtocolError):
            server.next_event()
        assert server.state is state
        return
    if state in (ConnectionState.CLOSED,):
        assert server.next_event() is None
        assert server.state is state and server.data_to_send() == b""
        return
    try:
        server.next_event()
    except RemoteProtocolError:
        assert server.state is ConnectionState.ERROR
        return
    assert state is not ConnectionState.ERROR, "ERROR must keep raising"
    assert (state, packet_type) in _state.RECEIVE, f"{packet_type.name} accepted in {state.name}"
    assert server.state is _state.RECEIVE[state, packet_type]
    if packet_type in _state.SERVER_NEVER_RECEIVES:
        pytest.fail(f"{packet_type.name} must never be accepted by a server")


def test_the_table_never_lets_a_server_receive_server_only_packets():
    for (state, packet_type), _new in _state.RECEIVE.items():
        assert packet_type not in _state.SERVER_NEVER_RECEIVES, (state, packet_type)
    assert (ConnectionState.CONNECTED, PacketType.CONNECT) not in _state.RECEIVE


# ---------------------------------------------------------------------- chunking


client_traffic = st.lists(
    st.one_of(publishes(), subscribes, unsubscribes, st.just(PingReq())), max_size=10
)


@SETTINGS
@given(sequence=client_traffic, cuts=st.lists(st.integers(min_value=0), max_size=12))
def test_any_split_of_a_valid_stream_yields_the_same_events_and_answers(sequence, cuts):
    # Distinct packet ids per QoS>0 publish keep the stream free of id reuse conflicts.
    data = encode(Connect("device-1")) + b"".join(encode(p) for p in sequence)
    whole = ServerConnection()
    whole_events = run(whole, [data])
    chunked = ServerConnection()
    chunked_events = run(chunked, split(data, cuts))
    assert chunked_events == whole_events
    assert chunked.data_to_send() == whole.data_to_send()
    assert chunked.state is whole.state
