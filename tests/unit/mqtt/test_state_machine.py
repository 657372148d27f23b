"""A Hypothesis RuleBasedStateMachine driving a client/server pair over a fake wire.

The client is `SansIOClient` (a persistent session, clean_session=0); the server is one
`ServerConnection` per network connection, plus a small model of the application above
it: it accepts, resumes the stored session, grants subscriptions, and acknowledges inbound
messages when it chooses to (as the gateway does once a message is stored). Bytes travel
only when a rule moves them, so packets cross, pile up and get lost with a dropped
connection in every order Hypothesis can find.

Invariants, after every step:
- the server's outbound inflight never exceeds its window;
- no QoS 2 message is delivered twice, on either side;
- every message the server reports delivered (DeliveryComplete) reached the client, and
  every message the client saw acknowledged reached the application;
- the server never ends in ERROR: a conforming client never breaks the protocol.
And at the end, once everything settles over a final connection, every QoS 1 and 2
message published on either side was delivered.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sansio_client import SansIOClient

from gateway.mqtt import (
    ConnectionState,
    ConnectReceived,
    DeliveryComplete,
    Disconnected,
    ProtocolSessionState,
    Publish,
    PublishReceived,
    QoS,
    ServerConnection,
    SubscribeReceived,
    UnsubscribeReceived,
)

WINDOW = 3
qos_levels = st.sampled_from(list(QoS))


class ClientServerPair(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.client = SansIOClient("device-1", clean_session=False)
        self.server: ServerConnection | None = None
        self.stored: ProtocolSessionState | None = None
        self.now = 0.0
        self.counter = 0
        # The application's side.
        self.pending: list[Publish] = []  # inbound, emitted, not yet acknowledged
        self.app_delivered: list[bytes] = []  # taken over by the application
        self.app_qos2: list[bytes] = []
        self.server_in_flight: dict[int, bytes] = {}  # our outbound id -> payload
        self.server_published: set[bytes] = set()  # every QoS 1/2 payload we sent
        # The client's side.
        self.client_in_flight: dict[int, bytes] = {}
        self.client_published: set[bytes] = set()
        self.completions_checked = 0

    # ------------------------------------------------------------------ helpers

    @property
    def connected(self) -> bool:
        return self.server is not None and self.server.state is ConnectionState.CONNECTED

    def tick(self) -> float:
        self.now += 1.0
        return self.now

    def payload(self, side: str) -> bytes:
        self.counter += 1
        return f"{side}{self.counter}".encode()

    def handle(self, event: object) -> None:
        server = self.server
        assert server is not None
        match event:
            case ConnectReceived():
                server.accept(session_present=self.stored is not None, resume=self.stored)
            case PublishReceived(publish=publish):
                if publish.qos == QoS.AT_MOST_ONCE:
                    self.app_delivered.append(publish.payload)
                else:
                    self.pending.append(publish)
            case SubscribeReceived(packet_id=packet_id, subscriptions=subscriptions):
                server.grant(packet_id, [qos for _, qos in subscriptions])
            case UnsubscribeReceived(packet_id=packet_id):
                server.unsubscribed(packet_id)
            case DeliveryComplete(packet_id=packet_id):
                payload = self.server_in_flight.pop(packet_id)
                delivered = {p.payload for p in self.client.delivered}
                assert payload in delivered, "acknowledged but never delivered"
            case Disconnected():
                pass
            case _:
                raise AssertionError(event)

    def client_to_server(self) -> None:
        server = self.server
        assert server is not None
        data = self.client.data_to_send()
        if data:  # b"" would mean EOF
            server.receive_data(data, self.tick())
        while True:
            event = server.next_event()
            if event is None:
                return
            self.handle(event)

    def server_to_client(self) -> None:
        assert self.server is not None
        self.client.receive_data(self.server.data_to_send())

    def take_over(self, publish: Publish) -> None:
        assert self.server is not None
        self.server.acknowledge(publish.packet_id)
        self.app_delivered.append(publish.payload)
        if publish.qos == QoS.EXACTLY_ONCE:
            assert publish.payload not in self.app_qos2, "QoS 2 delivered twice to the app"
            self.app_qos2.append(publish.payload)

    def end_connection(self, acknowledge_late: bool) -> None:
        # Whatever the application still holds: taken over after the end (recorded in the
        # session) or dropped (the client will send it again).
        if acknowledge_late:
            for publish in self.pending:
                self.take_over(publish)
        self.pending.clear()
        assert self.server is not None
        self.stored = self.server.session_state()
        self.server = None

    # ------------------------------------------------------------------ rules

    @precondition(lambda self: self.server is None)
    @rule()
    def connect(self) -> None:
        self.server = ServerConnection(max_inflight=WINDOW)
        self.client.new_connection()
        self.client.connect()
        self.client.resend_unacknowledged()  # pipelined after CONNECT (MQTT-4.4.0-1)
        self.client_to_server()
        assert self.server.state is ConnectionState.CONNECTED

    @precondition(lambda self: self.connected)
    @rule(qos=qos_levels)
    def client_publishes(self, qos: QoS) -> None:
        payload = self.payload("c")
        packet_id = self.client.publish("dev/t", payload, qos)
        if packet_id is not None:
            self.client_in_flight[packet_id] = payload
            self.client_published.add(payload)

    @precondition(lambda self: self.connected)
    @rule(qos=qos_levels)
    def server_publishes(self, qos: QoS) -> None:
        assert self.server is not None
        if not self.server.can_publish(qos):
            return
        payload = self.payload("s")
        packet_id = self.server.publish("dev/cmd", payload, qos)
        if packet_id is not None:
            self.server_in_flight[packet_id] = payload
            self.server_published.add(payload)

    @precondition(lambda self: self.connected)
    @rule(filters=st.lists(st.sampled_from(["a", "a/+", "#", "b/#"]), min_size=1, max_size=3))
    def client_subscribes(self, filters: list[str]) -> None:
        self.client.subscribe(*[(f, QoS.EXACTLY_ONCE) for f in filters])

    @precondition(lambda self: self.connected)
    @rule()
    def client_unsubscribes(self) -> None:
        self.client.unsubscribe("a", "#")

    @precondition(lambda self: self.connected)
    @rule()
    def client_pings(self) -> None:
        self.client.ping()

    @precondition(lambda self: self.connected)
    @rule()
    def wire_to_server(self) -> None:
        self.client_to_server()

    @precondition(lambda self: self.connected)
    @rule()
    def wire_to_client(self) -> None:
        self.server_to_client()

    @precondition(lambda self: self.connected and self.pending)
    @rule(index=st.integers(min_value=0))
    def application_takes_over(self, index: int) -> None:
        self.take_over(self.pending.pop(index % len(self.pending)))

    @precondition(lambda self: self.connected)
    @rule(acknowledge_late=st.booleans())
    def connection_drops(self, acknowledge_late: bool) -> None:
        assert self.server is not None
        self.client.data_to_send()  # bytes in flight are lost with the connection
        self.server.receive_data(b"", self.tick())
        assert self.server.next_event() == Disconnected(graceful=False)
        self.end_connection(acknowledge_late)

    @precondition(lambda self: self.connected)
    @rule(acknowledge_late=st.booleans())
    def client_disconnects(self, acknowledge_late: bool) -> None:
        self.client.disconnect()
        self.client_to_server()
        assert self.server is not None and self.server.state is ConnectionState.CLOSED
        self.end_connection(acknowledge_late)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def server_never_fails_and_respects_its_window(self) -> None:
        if self.server is not None:
            assert self.server.state is not ConnectionState.ERROR
            assert self.server.statistics().outbound_inflight <= WINDOW

    @invariant()
    def no_qos2_duplicate_reaches_the_client(self) -> None:
        qos2 = [p.payload for p in self.client.delivered if p.qos == QoS.EXACTLY_ONCE]
        assert len(qos2) == len(set(qos2))

    @invariant()
    def client_acknowledged_only_what_the_application_has(self) -> None:
        for packet_id in self.client.completed[self.completions_checked :]:
            payload = self.client_in_flight.pop(packet_id)
            assert payload in self.app_delivered, "PUBACK/PUBCOMP before the app had it"
        self.completions_checked = len(self.client.completed)

    def teardown(self) -> None:
        # Settle over one more connection: everything QoS 1/2 must arrive.
        if self.server is None:
            self.connect()
        for _ in range(20):
            while self.pending:
                self.take_over(self.pending.pop(0))
            self.client_to_server()
            self.server_to_client()
            self.client_acknowledged_only_what_the_application_has()
            if not (self.pending or self.client.outbound or self.server_in_flight):
                break
        assert not self.server_in_flight and not self.client.outbound
        assert self.client_published <= set(self.app_delivered)
        assert self.server_published <= {p.payload for p in self.client.delivered}


ClientServerPair.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_client_server_pair_keeps_qos_promises = ClientServerPair.TestCase
