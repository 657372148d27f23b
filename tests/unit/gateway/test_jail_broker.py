"""The jail and the broker core, without sockets: isolation, routing, sessions, retained."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.broker import Broker
from gateway.broker_state import Message
from gateway.errors import JailViolation
from gateway.jail import Jail
from gateway.mqtt.errors import RemoteProtocolError
from gateway.mqtt.packets import QoS
from gateway.mqtt.topics import validate_topic_filter, validate_topic_name
from gateway.reasons import DisconnectReason

NET_A = str(uuid.UUID(int=0xA))
NET_B = str(uuid.UUID(int=0xB))


class FakeOutlet:
    """Records what the broker asks of a connection (the connection is not under test)."""

    def __init__(self) -> None:
        self.wakes = 0
        self.closed: list[DisconnectReason] = []

    def wake(self) -> None:
        self.wakes += 1

    def close(self, reason: DisconnectReason, detail: str | None = None) -> None:
        self.closed.append(reason)


def _subscribe(broker: Broker, state, mounted_filter: str, qos: int) -> list[Message]:
    """Subscribe, and drain the retained messages the new subscription gets."""
    assert broker.subscribe(state, mounted_filter, QoS(qos))
    return list(broker.retained_for(mounted_filter, QoS(qos)))


def test_jail_mounts_topics_under_the_network_and_unmounts_them_back():
    jail = Jail(NET_A)
    assert jail.mount_topic("report/t") == f"{NET_A}/report/t"
    assert jail.mount_filter("#") == f"{NET_A}/#"
    assert jail.mount_filter(f"{NET_B}/#") == f"{NET_A}/{NET_B}/#"
    assert jail.unmount(f"{NET_A}/report/t") == "report/t"


@pytest.mark.parametrize("topic", ["$SYS/#", "$SYS/broker/uptime", "$share/g/t", "$"])
def test_jail_refuses_dollar_topics(topic):
    with pytest.raises(JailViolation):
        Jail(NET_A).mount_filter(topic)
    with pytest.raises(JailViolation):
        Jail(NET_A).mount_topic(topic)


def test_jail_refuses_to_unmount_another_networks_topic():
    with pytest.raises(JailViolation):
        Jail(NET_A).unmount(f"{NET_B}/report/t")


def _session(broker, network, client_id, clean=True):
    outlet = FakeOutlet()
    attached = broker.connect((network, client_id), clean, outlet)
    return attached, outlet


def test_hash_filter_of_one_network_never_sees_the_other_network():
    broker = Broker()
    a, _ = _session(broker, NET_A, "a")
    b, _ = _session(broker, NET_B, "b")
    broker.subscribe(a.state, Jail(NET_A).mount_filter("#"), QoS.EXACTLY_ONCE)
    broker.subscribe(b.state, Jail(NET_B).mount_filter("#"), QoS.EXACTLY_ONCE)
    broker.publish(Message(Jail(NET_B).mount_topic("x"), b"from b", QoS.AT_LEAST_ONCE))
    assert [m.payload for m in a.state.outbox] == []
    assert [m.payload for m in b.state.outbox] == [b"from b"]


def test_overlapping_subscriptions_deliver_once_at_the_highest_granted_qos():
    broker = Broker()
    a, outlet = _session(broker, NET_A, "a")
    jail = Jail(NET_A)
    broker.subscribe(a.state, jail.mount_filter("t/#"), QoS.AT_MOST_ONCE)
    broker.subscribe(a.state, jail.mount_filter("t/+"), QoS.AT_LEAST_ONCE)
    broker.publish(Message(jail.mount_topic("t/x"), b"p", QoS.EXACTLY_ONCE))
    assert list(a.state.outbox) == [Message(jail.mount_topic("t/x"), b"p", QoS.AT_LEAST_ONCE)]
    assert outlet.wakes == 1


def test_retained_message_is_replaced_cleared_and_sent_to_new_subscribers():
    broker = Broker()
    jail = Jail(NET_A)
    broker.publish(Message(jail.mount_topic("r"), b"one", QoS.AT_LEAST_ONCE, retain=True))
    broker.publish(Message(jail.mount_topic("r"), b"two", QoS.AT_LEAST_ONCE, retain=True))
    a, _ = _session(broker, NET_A, "a")
    assert _subscribe(broker, a.state, jail.mount_filter("#"), QoS.AT_MOST_ONCE) == [
        Message(jail.mount_topic("r"), b"two", QoS.AT_MOST_ONCE, True)
    ]
    broker.publish(Message(jail.mount_topic("r"), b"", QoS.AT_MOST_ONCE, retain=True))
    b, _ = _session(broker, NET_A, "b")
    assert _subscribe(broker, b.state, jail.mount_filter("#"), QoS.AT_MOST_ONCE) == []
    # Other networks never see a network's retained messages.
    broker.publish(Message(jail.mount_topic("r"), b"three", QoS.AT_MOST_ONCE, retain=True))
    c, _ = _session(broker, NET_B, "c")
    assert _subscribe(broker, c.state, Jail(NET_B).mount_filter("#"), QoS.AT_MOST_ONCE) == []


def test_second_connection_with_the_same_key_takes_over_with_duplicate_clientid():
    broker = Broker()
    _, first = _session(broker, NET_A, "same")
    _, second = _session(broker, NET_A, "same")
    assert first.closed == [DisconnectReason.DUPLICATE_CLIENTID]
    assert second.closed == []
    # The same client id in another network is another session.
    _, other = _session(broker, NET_B, "same")
    assert second.closed == [] and other.closed == []


def test_persistent_session_keeps_subscriptions_and_qos1_messages_while_offline():
    broker = Broker()
    jail = Jail(NET_A)
    a, outlet = _session(broker, NET_A, "p", clean=False)
    broker.subscribe(a.state, jail.mount_filter("t"), QoS.AT_LEAST_ONCE)
    broker.disconnect((NET_A, "p"), outlet)
    broker.publish(Message(jail.mount_topic("t"), b"q1", QoS.AT_LEAST_ONCE))
    broker.publish(Message(jail.mount_topic("t"), b"q0", QoS.AT_MOST_ONCE))
    again, _ = _session(broker, NET_A, "p", clean=False)
    assert again.session_present
    assert [m.payload for m in again.state.outbox] == [b"q1"]


def test_clean_session_discards_the_previous_state():
    broker = Broker()
    jail = Jail(NET_A)
    a, outlet = _session(broker, NET_A, "p", clean=False)
    broker.subscribe(a.state, jail.mount_filter("t"), QoS.AT_LEAST_ONCE)
    broker.disconnect((NET_A, "p"), outlet)
    fresh, _ = _session(broker, NET_A, "p", clean=True)
    assert not fresh.session_present
    assert broker.publish(Message(jail.mount_topic("t"), b"x", QoS.AT_LEAST_ONCE)) == 0


def test_full_outbox_drops_the_message_and_throttles_the_live_reader():
    broker = Broker(max_queued=2)
    jail = Jail(NET_A)
    a, outlet = _session(broker, NET_A, "slow")
    broker.subscribe(a.state, jail.mount_filter("t"), QoS.AT_LEAST_ONCE)
    for i in range(3):
        broker.publish(Message(jail.mount_topic("t"), b"%d" % i, QoS.AT_LEAST_ONCE))
    assert [m.payload for m in a.state.outbox] == [b"0", b"1"]
    assert outlet.closed == [DisconnectReason.THROTTLED]
    assert broker.statistics()["dropped"] == 1


# -- the isolation property -------------------------------------------------------------

_levels = st.sampled_from(["", "+", "#", "$SYS", "$", "a", "b", NET_A, NET_B, "x+", "#a"])
_topics = st.lists(_levels, min_size=1, max_size=5).map("/".join) | st.text(max_size=12)


def _valid(check, topic):
    try:
        check(topic)
    except RemoteProtocolError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(
    filters=st.lists(st.tuples(st.sampled_from([NET_A, NET_B]), _topics), max_size=8),
    publishes=st.lists(
        st.tuples(st.sampled_from([NET_A, NET_B]), _topics, st.booleans()), max_size=8
    ),
)
def test_nothing_published_in_one_network_is_ever_delivered_in_the_other(filters, publishes):
    broker = Broker()
    states = {net: _session(broker, net, "c")[0].state for net in (NET_A, NET_B)}
    received_retained = []
    for net, topic_filter in filters:
        if not _valid(validate_topic_filter, topic_filter):
            continue
        try:
            mounted = Jail(net).mount_filter(topic_filter)
        except JailViolation:
            continue
        received_retained += [(net, m) for m in _subscribe(broker, states[net], mounted, 2)]
    for net, topic, retain in publishes:
        if not _valid(validate_topic_name, topic):
            continue
        try:
            mounted = Jail(net).mount_topic(topic)
        except JailViolation:
            continue
        broker.publish(Message(mounted, net.encode(), QoS.AT_LEAST_ONCE, retain))
    for net, state in states.items():
        for message in state.outbox:
            assert message.payload == net.encode()
            assert Jail(net).contains(message.topic)
    for net, topic_filter in filters:
        if _valid(validate_topic_filter, topic_filter) and not topic_filter.startswith("$"):
            for message in broker.retained.matching(Jail(net).mount_filter(topic_filter)):
                assert message.payload == net.encode()
    for net, message in received_retained:
        assert message.payload == net.encode()


def test_a_network_cannot_hold_more_sessions_than_its_cap():
    broker = Broker(max_sessions_per_network=2)
    _session(broker, NET_A, "one", clean=False)
    _session(broker, NET_A, "two", clean=False)
    assert broker.connect((NET_A, "three"), True, FakeOutlet()) is None
    assert broker.connect((NET_A, "one"), False, FakeOutlet()) is not None  # existing: ok
    assert broker.connect((NET_B, "three"), True, FakeOutlet()) is not None  # other network


def test_a_network_cannot_retain_more_than_its_cap_but_can_replace_and_route():
    broker = Broker(max_retained_per_network=1)
    jail = Jail(NET_A)
    a, _ = _session(broker, NET_A, "a")
    broker.subscribe(a.state, jail.mount_filter("#"), QoS.AT_MOST_ONCE)
    broker.publish(Message(jail.mount_topic("r1"), b"1", retain=True))
    broker.publish(Message(jail.mount_topic("r2"), b"2", retain=True))  # routed, not kept
    broker.publish(Message(jail.mount_topic("r1"), b"1b", retain=True))  # replacing is fine
    assert [m.payload for m in a.state.outbox] == [b"1", b"2", b"1b"]
    assert [m.payload for m in broker.retained.matching(jail.mount_filter("#"))] == [b"1b"]
    assert broker.statistics()["retained_refused"] == 1
    broker.publish(Message(Jail(NET_B).mount_topic("r"), b"b", retain=True))
    assert broker.retained.count(NET_B) == 1
