"""The device session without sockets: bytes in, actions and bytes out.

Real parts: the protocol core (`ServerConnection`), the broker, the jail, our codec on the
device's side. The broker journal is what these tests are not about: a store that counts its
changes stands in for it (`journal_mark` is that count).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import pytest

from gateway.broker import Broker
from gateway.broker_state import MemoryRetainedStore, MemorySessionStore, Message
from gateway.device_session import (
    Admitted,
    Close,
    Refusal,
    Renew,
    SessionServices,
    StoreWait,
    Submit,
    open_session,
)
from gateway.identity import DeviceIdentity
from gateway.jail import Jail
from gateway.limits import ConnectionLimits, SourceRates, TokenBucket
from gateway.metrics import GatewayMetrics
from gateway.mqtt.codec import PacketReader, encode
from gateway.mqtt.packets import (
    Connect,
    ConnectReturnCode,
    Disconnect,
    PubAck,
    Publish,
    QoS,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    Will,
)
from gateway.mqtt.session import ServerConnection
from gateway.reasons import DisconnectReason, ThrottleLimit

NET = uuid.UUID(int=0xA)
N = str(NET)
IDENTITY = DeviceIdentity(NET, 0x1234, datetime(2099, 1, 1, tzinfo=UTC))
ADMITTED = Admitted(IDENTITY, Jail(N), "127.0.0.1")


class Journal:
    """The journal position: one more for each durable change the stores below make."""

    def __init__(self) -> None:
        self.changes = 0

    def mark(self) -> int:
        return self.changes


class JournaledSessions(MemorySessionStore):
    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self.journal = journal

    def put(self, state) -> None:
        super().put(state)
        if not state.clean:  # a persistent session's subscriptions are stored
            self.journal.changes += 1


class JournaledRetained(MemoryRetainedStore):
    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self.journal = journal

    def set(self, message: Message) -> None:
        super().set(message)
        self.journal.changes += 1


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def emit(self, event: str, **fields) -> None:
        self.lines.append((event, fields))


class Outlet:
    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1

    def close(self, reason, detail=None) -> None:
        pass


class Device:
    """One device's session with the gateway-side parts around it."""

    def __init__(self, broker: Broker, journal: Journal, client_id: str = "dev", *,
                 clean: bool = True, will: Will | None = None,
                 limits: ConnectionLimits | None = None) -> None:
        limits = limits if limits is not None else _limits()
        self.broker, self.journal = broker, journal
        self.routed: list[Message] = []
        self.metrics = GatewayMetrics().mqtt
        self.log = Log()
        self.outlet = Outlet()
        self.reader = PacketReader(max_packet_size=1 << 20)
        self.services = SessionServices(broker, limits, self._route, journal.mark,
                                        self.metrics, max_filters_per_subscribe=8)
        core = ServerConnection()
        core.receive_data(encode(Connect(client_id, clean_session=clean, will=will)), 0.0)
        connect = core.next_event().connect
        self.opened = open_session(ADMITTED, connect, client_id, core, self.services,
                                   self.outlet, self.log, self.outlet.wake)
        if isinstance(self.opened, Refusal):
            return
        self.session = self.opened
        self.session.accept()
        self.opening = self.received()  # the CONNACK, then a resumed session's flows

    def _route(self, message: Message) -> None:
        self.routed.append(message)
        self.broker.publish(message)

    def send(self, *packets, eof: bool = False) -> list:
        """One read holding `packets` (then EOF); return the actions up to the next read."""
        if packets:
            self.session.receive_data(b"".join(encode(p) for p in packets), 1.0)
        if eof:
            self.session.receive_data(b"", 1.0)
        return self.actions()

    def actions(self) -> list:
        out = []
        while (action := self.session.next_action()) is not None:
            out.append(action)
            if isinstance(action, StoreWait | Close):
                break  # the connection waits (or ends) before asking again
        return out

    def received(self) -> list:
        self.reader.feed(self.session.conn.data_to_send())
        packets = []
        while (packet := self.reader.next_packet()) is not None:
            packets.append(packet)
        return packets


def _limits(per_network: int = 100) -> ConnectionLimits:
    return ConnectionLimits(1000, per_network, TokenBucket(1000, 1000, 0.0),
                            SourceRates(1000, 1000))


@pytest.fixture
def journal():
    return Journal()


@pytest.fixture
def broker(journal):
    return Broker(sessions=JournaledSessions(journal), retained=JournaledRetained(journal))


def _subscriber(broker: Broker, topic_filter: str):
    """A live session of another device of the network, subscribed to `topic_filter`."""
    attached = broker.connect((N, f"watcher-{topic_filter}"), True, Outlet())
    broker.subscribe(attached.state, f"{N}/{topic_filter}", QoS.AT_LEAST_ONCE)
    return attached.state


def test_a_reads_publishes_are_routed_at_once_and_submitted_as_one_batch(broker, journal):
    device = Device(broker, journal)
    watcher = _subscriber(broker, "report/#")
    actions = device.send(Publish("report/t", b"1", QoS.AT_LEAST_ONCE, packet_id=1),
                          Publish("report/h", b"2", QoS.AT_MOST_ONCE),
                          Publish("report/t", b"3", QoS.EXACTLY_ONCE, packet_id=2))
    assert actions == [Submit([("report/t", b"1", 1), ("report/h", b"2", 0),
                               ("report/t", b"3", 2)], [1, 2], None)]
    assert [m.topic for m in device.routed] == [f"{N}/report/t", f"{N}/report/h",
                                                f"{N}/report/t"]
    assert [m.payload for m in watcher.outbox] == [b"1", b"2", b"3"]
    assert device.session.published == 3
    # Nothing is acknowledged until the batch is durable, then all of it, in order.
    assert device.received() == []
    device.session.durable([1, 2])
    packets = device.received()
    assert packets[0] == PubAck(1)
    assert packets[1].packet_id == 2  # the PUBREC of the QoS 2 flow


def test_a_read_that_changes_durable_mqtt_state_names_the_journal_position(broker, journal):
    device = Device(broker, journal)
    (submit,) = device.send(Publish("cfg/mode", b"eco", QoS.AT_LEAST_ONCE, retain=True,
                                    packet_id=5))
    assert journal.changes == 1  # the retained message
    assert submit == Submit([("cfg/mode", b"eco", 1)], [5], 1)


def test_a_publish_outside_the_jail_is_answered_on_the_errors_topic_and_still_acknowledged(
        broker, journal):
    device = Device(broker, journal)
    errors = _subscriber(broker, "errors")
    actions = device.send(Publish("$SYS/x", b"1", QoS.AT_LEAST_ONCE, packet_id=7))
    assert actions == [Submit([], [7], None)]  # nothing for ingest, still acknowledged
    assert device.routed == []
    (note,) = errors.outbox
    assert json.loads(note.payload) == {"error": "publish_denied", "topic": "$SYS/x",
                                        "reason": "$-topics are reserved to the server"}
    assert device.metrics.publishes_denied.value == 1
    assert device.log.lines[0][0] == "publish_denied"
    device.session.durable([7])
    assert device.received() == [PubAck(7)]


def test_a_persistent_sessions_subscribe_is_answered_only_once_stored(broker, journal):
    broker.publish(Message(f"{N}/cfg/a", b"A", QoS.AT_LEAST_ONCE, retain=True))
    device = Device(broker, journal, clean=False)
    actions = device.send(Subscribe(1, (("cfg/#", QoS.AT_LEAST_ONCE),)),
                          Unsubscribe(2, ("gone/#",)))
    assert actions == [StoreWait(journal.changes)]
    assert device.received() == []  # no SUBACK before the subscription is stored
    assert device.actions() == []  # the store said so: the answers go out, in order
    assert device.received() == [SubAck(1, (1,)), UnsubAck(2)]
    # The retained message of the new subscription is the writer's to send.
    assert device.session.fill(32) == 1
    (retained,) = device.received()
    assert (retained.topic, retained.payload, retained.retain) == ("cfg/a", b"A", True)
    assert [event for event, _ in device.log.lines] == ["subscribed"]


def test_a_clean_sessions_subscribe_is_answered_at_once(broker, journal):
    device = Device(broker, journal)
    assert device.send(Subscribe(1, (("cfg/#", QoS.AT_LEAST_ONCE),
                                     ("$SYS/#", QoS.AT_LEAST_ONCE)))) == []
    assert device.received() == [SubAck(1, (1, 0x80))]
    assert device.session.named == 2  # the filters the read's rate counts


def test_a_persistent_session_keeps_its_inflight_messages_for_the_resume(broker, journal):
    device = Device(broker, journal, "keeper", clean=False)
    device.send(Subscribe(1, (("cmd/#", QoS.AT_LEAST_ONCE),)))
    device.actions()
    device.received()
    broker.publish(Message(f"{N}/cmd/go", b"now", QoS.AT_LEAST_ONCE))
    assert device.session.fill(32) == 1
    (sent,) = device.received()  # sent, never acknowledged: the device goes away
    assert device.send(eof=True) == [Close(DisconnectReason.CONNECTION_LOST, "peer closed")]
    assert device.session.end(device.outlet) is None  # no will set
    state = broker.sessions.get((N, "keeper"))
    assert [m.payload for m in state.inflight.values()] == [b"now"]

    again = Device(broker, journal, "keeper", clean=False)
    # Re-sent right after the CONNACK with its packet id and DUP set (MQTT-4.4.0-1).
    connack, resent = again.opening
    assert connack.session_present
    assert (resent.packet_id, resent.dup, resent.payload) == (sent.packet_id, True, b"now")
    # Its PUBACK completes the flow: nothing is left to resume.
    assert again.send(PubAck(sent.packet_id)) == []
    again.send(eof=True)
    again.session.end(again.outlet)
    assert state.inflight == {}


def test_the_will_is_published_on_an_ungraceful_end_only(broker, journal):
    will = Will("status", b"gone", QoS.AT_LEAST_ONCE, retain=True)
    lost = Device(broker, journal, "lost", will=will)
    assert lost.send(eof=True) == [Close(DisconnectReason.CONNECTION_LOST, "peer closed")]
    assert lost.session.end(lost.outlet) == Message(f"{N}/status", b"gone",
                                                    QoS.AT_LEAST_ONCE, True)

    polite = Device(broker, journal, "polite", will=will)
    assert polite.send(Disconnect()) == [Close(DisconnectReason.CLIENT_DISCONNECT)]
    assert polite.session.end(polite.outlet) is None
    assert not broker.is_live((N, "polite"))


def test_a_protocol_error_closes_after_the_reads_batch(broker, journal):
    device = Device(broker, journal)
    data = encode(Publish("report/t", b"1", QoS.AT_LEAST_ONCE, packet_id=1)) + b"\xf0\x00"
    device.session.receive_data(data, 1.0)
    submit, close = device.actions()
    assert submit == Submit([("report/t", b"1", 1)], [1], None)
    assert close.reason is DisconnectReason.CLIENT_ERROR
    assert device.metrics.protocol_errors.value == 1


def test_a_csr_on_cert_renew_is_a_renewal_not_a_message(broker, journal):
    device = Device(broker, journal)
    actions = device.send(Publish("cert/renew", b"CSR", QoS.AT_LEAST_ONCE, packet_id=3))
    assert actions == [Renew(b"CSR"), Submit([], [3], None)]
    assert device.routed == []


def test_the_session_module_imports_no_trio_and_no_ssl():
    code = ("import sys, gateway.device_session, gateway.durability; "
            "print(sorted(m for m in ('trio', 'ssl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_a_connect_is_refused_for_a_will_outside_the_jail_or_a_network_at_its_cap(broker,
                                                                                 journal):
    bad_will = Device(broker, journal, "w", will=Will("$SYS/dead", b"x"))
    assert bad_will.opened == Refusal(ConnectReturnCode.NOT_AUTHORIZED,
                                      DisconnectReason.CLIENT_ERROR,
                                      "will topic: $-topics are reserved to the server: "
                                      "'$SYS/dead'")
    limits = _limits(per_network=1)
    first = Device(broker, journal, "one", limits=limits)
    second = Device(broker, journal, "two", limits=limits)
    assert second.opened == Refusal(ConnectReturnCode.SERVER_UNAVAILABLE,
                                    DisconnectReason.THROTTLED, "max_connections_per_network")
    assert second.metrics.throttled[ThrottleLimit.MAX_CONNECTIONS_PER_NETWORK].value == 1
    # The same device taking its session over gets in at the cap; an ended session frees it.
    again = Device(broker, journal, "one", limits=limits)
    assert again.session.replaced is None and again.session.session_present is False
    first.session.end(first.outlet)  # taken over: the broker keeps the newer connection
    assert broker.is_live((N, "one"))
    again.session.end(again.outlet)
    assert not isinstance(Device(broker, journal, "two", limits=limits).opened, Refusal)
