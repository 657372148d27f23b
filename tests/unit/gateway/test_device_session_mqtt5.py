"""The device session's MQTT 5 decisions without sockets: what it grants at CONNECT, how it
refuses a PUBLISH (reason codes and strings), what passes through to the broker, the
session expiry a DISCONNECT sets, the will's delay; and that 3.1.1 takes none of it.

Real parts: the protocol core (`ServerConnection`), the broker, the jail, our codec on the
device's side (MQTT 5 encoding)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from gateway.answers import ack_reason, disconnect_reason, granted_expiry, granted_keepalive
from gateway.broker import Broker
from gateway.broker_state import Message
from gateway.device_session import Admitted, Refusal, SessionServices, Submit, open_session
from gateway.identity import DeviceIdentity
from gateway.ingest.errors import ReadingRejected, RejectCode
from gateway.jail import Jail
from gateway.limits import ConnectionLimits, SourceRates, TokenBucket
from gateway.metrics import GatewayMetrics
from gateway.mqtt.codec import PacketReader
from gateway.mqtt.encoder import encode
from gateway.mqtt.packets import (
    PROTOCOL_LEVEL_5,
    Connect,
    Disconnect,
    Publish,
    QoS,
    Subscribe,
    SubscriptionOptions,
    Unsubscribe,
    Will,
)
from gateway.mqtt.properties import make_properties
from gateway.mqtt.session import ServerConnection
from gateway.reasons import DisconnectReason

NET = uuid.UUID(int=0xA)
N = str(NET)
ADMITTED = Admitted(DeviceIdentity(NET, 0x1234, datetime(2099, 1, 1, tzinfo=UTC)), Jail(N),
                    "127.0.0.1")
Q1 = QoS.AT_LEAST_ONCE
WALL = 1_000_000.0


class Outlet:
    def wake(self) -> None:
        pass

    def close(self, reason, detail=None) -> None:
        pass


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def emit(self, event: str, **fields) -> None:
        self.lines.append((event, fields))


class Device:
    """One MQTT 5 (or 3.1.1) device's session, the gateway-side parts around it."""

    def __init__(self, broker: Broker, client_id: str = "dev", *, v5: bool = True,
                 clock=lambda: WALL, **connect) -> None:
        self.broker = broker
        self.routed: list[Message] = []
        self.metrics = GatewayMetrics().mqtt
        self.outlet = Outlet()
        limits = ConnectionLimits(1000, 100, TokenBucket(1000, 1000, 0.0),
                                  SourceRates(1000, 1000))
        self.services = SessionServices(broker, limits, self._route, lambda: 0, self.metrics,
                                        8, max_session_expiry=600, max_keepalive=60,
                                        clock=clock)
        level = PROTOCOL_LEVEL_5 if v5 else 4
        self.level = level
        core = ServerConnection()
        core.receive_data(encode(Connect(client_id, protocol_level=level, **connect)), 0.0)
        self.connect = core.next_event().connect
        self.opened = open_session(ADMITTED, self.connect, client_id or "auto-1", core,
                                   self.services, self.outlet, Log(), self.outlet.wake)
        if isinstance(self.opened, Refusal):
            return
        self.session = self.opened
        self.session.accept()
        self.reader = PacketReader(max_packet_size=1 << 20, protocol_level=level)
        self.session.conn.data_to_send()  # the CONNACK (its tests read it themselves)

    def _route(self, message: Message) -> None:
        self.routed.append(message)
        self.broker.publish(message)

    def send(self, *packets) -> list:
        self.session.receive_data(b"".join(encode(p, self.level) for p in packets), 1.0)
        out = []
        while (action := self.session.next_action()) is not None:
            out.append(action)
        return out

    def received(self) -> list:
        self.reader.feed(self.session.conn.data_to_send())
        packets = []
        while (packet := self.reader.next_packet()) is not None:
            packets.append(packet)
        return packets


@pytest.fixture
def broker():
    return Broker(clock=lambda: WALL)


def test_session_expiry_is_granted_capped_and_decides_persistence(broker):
    kept = Device(broker, "kept", clean_session=False,
                  properties=make_properties(session_expiry_interval=0xFFFFFFFF))
    assert (kept.session.state.expiry, kept.session.state.clean) == (600, False)
    gone = Device(broker, "gone", clean_session=False)  # no interval: 0, not persistent
    assert (gone.session.state.expiry, gone.session.state.clean) == (0, True)
    old = Device(broker, "old", v5=False, clean_session=False)
    assert (old.session.state.expiry, old.session.state.clean) == (None, False)


def test_the_answers_grant_caps_and_map_reasons():
    assert granted_expiry(None, 600) == 0 and granted_expiry(30, 600) == 30
    assert granted_expiry(0xFFFFFFFF, 600) == 600 and granted_expiry(10**6, 600) == 600
    assert granted_keepalive(0, 60) == 60 and granted_keepalive(120, 60) == 60
    assert granted_keepalive(30, 60) is None and granted_keepalive(0, 0) is None
    assert ack_reason("MALFORMED", "not JSON") == (0x99, "MALFORMED: not JSON")
    assert ack_reason("RANGE", "above max")[0] == 0x83
    assert ack_reason("TYPE", "text")[0] == 0x83
    assert ack_reason("PERMISSION", "read-only")[0] == 0x87
    assert ack_reason("QUOTA", "full")[0] == 0x97
    assert [disconnect_reason(r) for r in (
        DisconnectReason.DUPLICATE_CLIENTID, DisconnectReason.REVOKED, DisconnectReason.ERASED,
        DisconnectReason.KEEP_ALIVE_TIMEOUT, DisconnectReason.THROTTLED,
        DisconnectReason.SERVER_SHUTDOWN, DisconnectReason.USE_ANOTHER_SERVER,
        DisconnectReason.CLIENT_DISCONNECT, DisconnectReason.CONNECTION_LOST)] == [
        0x8E, 0x98, 0x98, 0x8D, 0x96, 0x8B, 0x9C, None, None]


def test_publish_properties_pass_through_with_the_response_topic_mounted(broker):
    device = Device(broker)
    props = make_properties(response_topic="answers/x", correlation_data=b"c",
                            user_properties=(("k", "v"),), message_expiry_interval=30,
                            content_type="text/plain")
    (submit,) = device.send(Publish("t", b"1", Q1, packet_id=1, properties=props))
    (message,) = device.routed
    assert message.props.response_topic == f"{N}/answers/x"
    assert (message.props.correlation_data, message.props.user_properties,
            message.props.content_type) == (b"c", (("k", "v"),), "text/plain")
    assert message.props.message_expiry_interval is None  # kept as expires_at instead
    assert (message.expires_at, message.origin) == (WALL + 30, (N, "dev"))
    assert submit.reported == (1,) and submit.refusals == {}


def test_a_response_topic_outside_the_jail_is_refused_0x87_with_its_rule(broker):
    device = Device(broker)
    (submit,) = device.send(Publish("t", b"1", Q1, packet_id=4, properties=make_properties(
        response_topic="$SYS/x")))
    assert device.routed == []
    assert submit.refusals[4][0] == 0x87 and "publish_denied" in submit.refusals[4][1]


def test_a_payload_that_is_not_the_utf8_its_format_indicator_says_is_refused_0x99(broker):
    device = Device(broker)
    (submit,) = device.send(Publish("t", b"\xff\xfe", Q1, packet_id=2,
                                    properties=make_properties(payload_format_indicator=1)))
    assert device.routed == []
    assert submit.refusals == {2: (0x99, "payload_format_indicator: the payload is not UTF-8")}


def test_ingest_verdicts_become_reasons_of_the_right_packet_ids(broker):
    device = Device(broker)
    (submit,) = device.send(Publish("report/a", b"x", Q1, packet_id=1),
                            Publish("report/b", b"1", QoS.AT_MOST_ONCE),
                            Publish("report/c", b"500", Q1, packet_id=3))
    verdicts = [ReadingRejected(RejectCode.MALFORMED, "not JSON"), None,
                ReadingRejected(RejectCode.RANGE, "500 is above max 100")]
    assert device.session.reasons_for(submit, verdicts) == {
        1: (0x99, "MALFORMED: not JSON"), 3: (0x83, "RANGE: 500 is above max 100")}


def test_a_3_1_1_session_submits_as_before_and_has_no_reasons(broker):
    device = Device(broker, v5=False)
    (submit,) = device.send(Publish("report/a", b"x", Q1, packet_id=1))
    assert submit == Submit([("report/a", b"x", 1)], [1], None)
    verdicts = [ReadingRejected(RejectCode.MALFORMED, "not JSON")]
    assert device.session.reasons_for(submit, verdicts) == {}


def test_subscribe_options_and_identifier_reach_the_broker(broker):
    device = Device(broker)
    device.send(Subscribe(1, (("a/#", Q1), ("$SYS/#", Q1), ("$share/g/b", Q1)),
                          options=(SubscriptionOptions(no_local=True),
                                   SubscriptionOptions(), SubscriptionOptions()),
                          properties=make_properties(subscription_identifiers=(9,))))
    state = device.session.state
    assert state.options[f"{N}/a/#"].no_local and state.options[f"{N}/a/#"].identifier == 9
    assert f"$share/g/{N}/b" in state.subscriptions


def test_a_disconnect_sets_the_session_expiry_capped(broker):
    device = Device(broker, clean_session=False,
                    properties=make_properties(session_expiry_interval=60))
    device.send(Disconnect(properties=make_properties(session_expiry_interval=10**6)))
    assert device.session.disconnect_expiry == 600
    device.session.end(device.outlet)
    assert broker.sessions.get((N, "dev")).expiry == 600


def test_the_will_keeps_its_properties_and_delay(broker):
    will = Will("lwt", b"gone", Q1, properties=make_properties(
        will_delay_interval=30, content_type="text/plain", message_expiry_interval=100))
    device = Device(broker, will=will, clean_session=False,
                    properties=make_properties(session_expiry_interval=300))
    assert device.session.will_delay == 30
    device.session.receive_data(b"", 1.0)
    list(iter(device.session.next_action, None))
    message = device.session.end(device.outlet)
    assert (message.topic, message.props.content_type) == (f"{N}/lwt", "text/plain")
    assert message.expires_at == WALL + 30 + 100


def test_refusals_ride_on_the_puback_and_pubrec_with_their_reason_string(broker):
    device = Device(broker)
    (submit,) = device.send(Publish("report/a", b"x", Q1, packet_id=1),
                            Publish("report/b", b"y", QoS.EXACTLY_ONCE, packet_id=2),
                            Publish("report/c", b"z", Q1, packet_id=3))
    verdicts = [ReadingRejected(RejectCode.RANGE, "500 is above max 100"),
                ReadingRejected(RejectCode.MALFORMED, "not JSON"), None]
    device.session.durable(submit.acknowledge, (),
                           device.session.reasons_for(submit, verdicts))
    puback, pubrec, ok = device.received()
    assert (type(puback).__name__, puback.reason_code,
            puback.properties.reason_string) == ("PubAck", 0x83, "RANGE: 500 is above max 100")
    assert (type(pubrec).__name__, pubrec.reason_code) == ("PubRec", 0x99)
    assert (ok.packet_id, ok.reason_code) == (3, 0)


def test_the_connack_grants_and_offers(broker):
    device = Device(broker, "", clean_session=True, keepalive=0,
                    properties=make_properties(session_expiry_interval=10**6))
    device.session.conn.data_to_send()
    core = ServerConnection()
    core.receive_data(encode(Connect("", protocol_level=PROTOCOL_LEVEL_5, keepalive=0,
                                     properties=make_properties(
                                         session_expiry_interval=10**6))), 0.0)
    connect = core.next_event().connect
    session = open_session(ADMITTED, connect, "auto-7", core, device.services, Outlet(),
                           Log(), lambda: None)
    session.accept()
    reader = PacketReader(max_packet_size=1 << 20, protocol_level=PROTOCOL_LEVEL_5)
    reader.feed(core.data_to_send())
    connack = reader.next_packet()
    p = connack.properties
    assert (p.assigned_client_identifier, p.server_keep_alive, p.session_expiry_interval) == (
        "auto-7", 60, 600)
    assert (p.retain_available, p.wildcard_subscription_available,
            p.subscription_identifier_available, p.shared_subscription_available) == (
        1, 1, 1, 1)
    assert session.keepalive == 60


def test_suback_and_unsuback_say_why_a_filter_was_refused(broker):
    device = Device(broker)
    broker.max_subscriptions_per_session = 2
    device.send(Subscribe(1, (("a", Q1), ("$SYS/#", Q1), ("b", Q1), ("c", Q1))),
                Unsubscribe(2, ("a", "never", "$SYS/x")))
    suback, unsuback = device.received()
    assert suback.return_codes == (1, 0x87, 1, 0x97)
    assert unsuback.reason_codes == (0x00, 0x11, 0x87)


def test_a_full_network_is_refused_quota_exceeded_in_mqtt5_and_0x03_in_3_1_1(broker):
    broker.max_sessions_per_network = 0
    assert Device(broker, "v5").opened.code == 0x97
    assert Device(broker, "v4", v5=False).opened.code == 0x03


def test_queued_messages_never_sent_are_forgotten_expired_or_too_large():
    wall = [WALL]
    broker = Broker(clock=lambda: wall[0])
    connect = dict(clean_session=False, clock=lambda: wall[0], properties=make_properties(
        session_expiry_interval=60, maximum_packet_size=200))
    first = Device(broker, "dev", **connect)
    first.send(Subscribe(1, (("t/#", Q1),)))
    first.session.end(first.outlet)  # offline: what comes now is queued and kept
    broker.publish(Message(f"{N}/t/old", b"x", Q1, expires_at=WALL + 1))
    broker.publish(Message(f"{N}/t/big", b"x" * 500, Q1))
    broker.publish(Message(f"{N}/t/ok", b"fine", Q1))
    assert broker.queued_bytes(N) == 505
    wall[0] += 5  # the first one's expiry has passed
    again = Device(broker, "dev", **connect)
    again.session.fill(32)  # the big one is handed over and discarded by the core
    (sent,) = again.received()
    assert sent.topic == "t/ok"
    assert again.metrics.messages_expired.value == 1
    assert again.session.conn.statistics().dropped_too_large == 1
    assert broker.queued_bytes(N) == 4  # only the one in flight is still held
