"""The client/server RuleBasedStateMachine of test_state_machine, at MQTT 5.

The same pair and the same promises (no QoS 2 duplicate, nothing acknowledged before the
application has it, everything QoS 1/2 delivered once the connection settles), with what
MQTT 5 adds in the way: the client announces a Receive Maximum smaller than the server's
window (so resumed sessions hold messages back, section 4.9) and a Topic Alias Maximum (so
the server aliases what it sends), and the client publishes through a topic alias of its
own, set anew on every connection (aliases live as long as one connection, 3.3.2.3.4).
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule
from sansio_client import SansIOClient
from test_state_machine import WINDOW, ClientServerPair

from gateway.mqtt import ConnectionState, Properties, QoS, ServerConnection

RECEIVE_MAXIMUM = 2
assert RECEIVE_MAXIMUM < WINDOW


class ClientServerPair5(ClientServerPair):
    def __init__(self) -> None:
        super().__init__()
        self.client = SansIOClient(
            "device-1", clean_session=False, protocol_level=5,
            properties=Properties(receive_maximum=RECEIVE_MAXIMUM, topic_alias_maximum=2,
                                  session_expiry_interval=3600),
        )
        self.alias_set = False

    @precondition(lambda self: self.server is None)
    @rule()
    def connect(self) -> None:
        self.server = ServerConnection(max_inflight=WINDOW, topic_alias_maximum=4)
        self.alias_set = False
        self.client.new_connection()
        self.client.connect()
        self.client.resend_unacknowledged()
        self.client_to_server()
        assert self.server.state is ConnectionState.CONNECTED

    @precondition(lambda self: self.connected)
    @rule(qos=st.sampled_from(list(QoS)))
    def client_publishes_through_an_alias(self, qos: QoS) -> None:
        payload = self.payload("c")
        topic = "" if self.alias_set else "dev/t"
        self.alias_set = True
        packet_id = self.client.publish(topic, payload, qos,
                                        properties=Properties(topic_alias=3))
        if packet_id is not None:
            self.client_in_flight[packet_id] = payload
            self.client_published.add(payload)

    @invariant()
    def server_respects_the_clients_receive_maximum(self) -> None:
        if self.server is not None:
            assert self.server.statistics().outbound_inflight <= RECEIVE_MAXIMUM

    @invariant()
    def client_sees_full_topics(self) -> None:
        assert all(p.topic for p in self.client.delivered)


ClientServerPair5.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_mqtt5_client_server_pair_keeps_qos_promises = ClientServerPair5.TestCase
