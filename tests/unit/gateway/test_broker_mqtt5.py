"""The broker's MQTT 5 semantics without sockets: message expiry, subscription options and
identifiers, shared subscriptions inside a jail, session expiry and delayed wills."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.broker import Broker
from gateway.broker_state import Message
from gateway.delivery import Grant, _matches, _split
from gateway.errors import JailViolation
from gateway.jail import Jail
from gateway.mqtt.packets import QoS
from gateway.mqtt.properties import make_properties
from gateway.mqtt.topics import topic_matches
from gateway.reasons import DisconnectReason

NET_A = str(uuid.UUID(int=0xA))
NET_B = str(uuid.UUID(int=0xB))
A, B = Jail(NET_A), Jail(NET_B)
Q1 = QoS.AT_LEAST_ONCE


class FakeOutlet:
    def __init__(self) -> None:
        self.closed: list[DisconnectReason] = []

    def wake(self) -> None:
        pass

    def close(self, reason: DisconnectReason, detail: str | None = None) -> None:
        self.closed.append(reason)


class Wall:
    """A wall clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def wall() -> Wall:
    return Wall()


@pytest.fixture
def broker(wall) -> Broker:
    return Broker(clock=wall)


def session(broker: Broker, jail: Jail, client: str, *, expiry: int | None = 0,
            clean: bool = True, live: bool = True):
    outlet = FakeOutlet()
    attached = broker.connect((jail.network, client), clean, outlet, expiry=expiry)
    if not live:
        broker.disconnect((jail.network, client), outlet)
    return attached.state, outlet


def test_an_expired_message_is_neither_routed_nor_retained(broker, wall):
    state, _ = session(broker, A, "sub")
    broker.subscribe(state, A.mount_filter("t"), Q1)
    broker.publish(Message(A.mount_topic("t"), b"x", Q1, True, expires_at=wall.now))
    assert not state.outbox and broker.expired == 1
    assert list(broker.retained_for(A.mount_filter("t"), Q1)) == []


def test_a_retained_message_past_its_expiry_is_cleared_not_sent(broker, wall):
    broker.publish(Message(A.mount_topic("t"), b"x", Q1, True, expires_at=wall.now + 10))
    assert [m.payload for m in broker.retained_for(A.mount_filter("t"), Q1)] == [b"x"]
    wall.now += 10
    assert list(broker.retained_for(A.mount_filter("t"), Q1)) == []
    assert broker.retained.get(A.mount_topic("t")) is None


def test_properties_and_expiry_ride_on_every_copy(broker, wall):
    props = make_properties(content_type="text/plain", user_properties=(("k", "v"),))
    state, _ = session(broker, A, "sub")
    broker.subscribe(state, A.mount_filter("t"), Q1)
    broker.publish(Message(A.mount_topic("t"), b"x", Q1, props=props,
                           expires_at=wall.now + 60))
    (copy,) = state.outbox
    assert (copy.props, copy.expires_at) == (props, wall.now + 60)


def test_no_local_keeps_a_sessions_own_messages_from_it(broker):
    mine, _ = session(broker, A, "me")
    other, _ = session(broker, A, "other")
    for state in (mine, other):
        broker.subscribe(state, A.mount_filter("t"), Q1, Grant(Q1, no_local=True))
    broker.publish(Message(A.mount_topic("t"), b"x", Q1, origin=mine.key))
    assert not mine.outbox and len(other.outbox) == 1


def test_retain_as_published_keeps_the_flag_and_identifiers_go_with_the_copy(broker):
    state, _ = session(broker, A, "sub")
    broker.subscribe(state, A.mount_filter("t/#"), Q1,
                     Grant(Q1, retain_as_published=True, identifier=7))
    broker.subscribe(state, A.mount_filter("t/+"), QoS.AT_MOST_ONCE, Grant(QoS(0), identifier=9))
    plain, _ = session(broker, A, "plain")
    broker.subscribe(plain, A.mount_filter("t/#"), Q1)
    broker.publish(Message(A.mount_topic("t/a"), b"x", Q1, True))
    (copy,) = state.outbox  # one copy for overlapping subscriptions, both identifiers
    assert (copy.retain, copy.qos, sorted(copy.sub_ids)) == (True, Q1, [7, 9])
    (other,) = plain.outbox
    assert (other.retain, other.sub_ids) == (False, ())


def test_shared_subscription_gives_each_message_to_one_live_member_in_turn(broker):
    members = [session(broker, A, f"m{i}")[0] for i in range(3)]
    for state in members:
        assert broker.subscribe(state, A.mount_filter("$share/g/t/#", shared=True), Q1)
    for i in range(6):
        broker.publish(Message(A.mount_topic("t/x"), str(i).encode(), Q1))
    assert [len(m.outbox) for m in members] == [2, 2, 2]
    assert sorted(c.payload for m in members for c in m.outbox) == [
        str(i).encode() for i in range(6)]


def test_shared_subscription_prefers_live_members_and_keeps_for_offline_ones(broker):
    live, _ = session(broker, A, "live")
    away, _ = session(broker, A, "away", expiry=60, clean=False, live=False)
    for state in (away, live):
        broker.subscribe(state, A.mount_filter("$share/g/t", shared=True), Q1)
    for _ in range(3):
        broker.publish(Message(A.mount_topic("t"), b"x", Q1))
    assert (len(live.outbox), len(away.outbox)) == (3, 0)
    broker.disconnect(live.key, broker.live()[live.key])
    broker.publish(Message(A.mount_topic("t"), b"y", Q1))
    assert [m.payload for m in away.outbox] == [b"y"]


def test_a_shared_group_never_reaches_across_jails(broker):
    a, _ = session(broker, A, "a")
    b, _ = session(broker, B, "b")
    broker.subscribe(a, A.mount_filter("$share/g/t", shared=True), Q1)
    broker.subscribe(b, B.mount_filter("$share/g/t", shared=True), Q1)
    for _ in range(4):
        broker.publish(Message(A.mount_topic("t"), b"x", Q1))
    assert (len(a.outbox), len(b.outbox)) == (4, 0)
    assert A.mount_filter("$share/g/t", shared=True) == f"$share/g/{NET_A}/t"
    assert A.unmount_filter(f"$share/g/{NET_A}/t") == "$share/g/t"


def test_share_is_an_ordinary_dollar_filter_for_3_1_1_and_needs_a_group_and_filter():
    with pytest.raises(JailViolation):
        A.mount_filter("$share/g/t")
    for bad in ("$share//t", "$share/g", "$share/g/$SYS/x"):
        with pytest.raises(JailViolation):
            A.mount_filter(bad, shared=True)


def test_an_unsubscribed_member_leaves_its_group_and_the_last_one_removes_it(broker):
    state, _ = session(broker, A, "m")
    mounted = A.mount_filter("$share/g/t", shared=True)
    broker.subscribe(state, mounted, Q1)
    broker.unsubscribe(state, mounted)
    assert broker.publish(Message(A.mount_topic("t"), b"x", Q1)) == 0


def test_a_session_with_expiry_is_kept_that_long_then_dropped_with_its_queue(broker, wall):
    state, _ = session(broker, A, "dev", expiry=30, clean=False, live=False)
    broker.subscribe(state, A.mount_filter("t"), Q1)
    broker.publish(Message(A.mount_topic("t"), b"x", Q1))
    assert broker.tick(wall.now + 29) == ([], [])
    assert broker.sessions.get(state.key) is state and len(state.outbox) == 1
    dropped, _ = broker.tick(wall.now + 30)
    assert dropped == [state.key] and broker.sessions.get(state.key) is None
    assert broker.publish(Message(A.mount_topic("t"), b"y", Q1)) == 0


def test_a_session_with_expiry_0_ends_with_its_connection(broker):
    state, _ = session(broker, A, "dev", expiry=0, clean=False, live=False)
    assert broker.sessions.get(state.key) is None


def test_reconnecting_in_time_keeps_the_session_and_cancels_its_expiry(broker, wall):
    state, _ = session(broker, A, "dev", expiry=30, clean=False, live=False)
    again = broker.connect(state.key, False, FakeOutlet(), expiry=30)
    assert again.session_present
    assert broker.tick(wall.now + 100) == ([], [])


def test_a_delayed_will_waits_and_a_reconnect_in_time_cancels_it(broker, wall):
    watcher, _ = session(broker, A, "watcher")
    broker.subscribe(watcher, A.mount_filter("will"), Q1)
    state, _ = session(broker, A, "dev", expiry=300, clean=False, live=False)
    broker.hold_will(state.key, Message(A.mount_topic("will"), b"gone", Q1), 10)
    assert broker.tick(wall.now + 9) == ([], []) and not watcher.outbox
    _, wills = broker.tick(wall.now + 10)
    assert [w.payload for w in wills] == [b"gone"] and len(watcher.outbox) == 1
    broker.hold_will(state.key, Message(A.mount_topic("will"), b"again", Q1), 10)
    broker.connect(state.key, False, FakeOutlet(), expiry=300)
    assert broker.tick(wall.now + 100) == ([], [])


def test_a_will_is_published_when_its_session_ends_before_the_delay(broker, wall):
    watcher, _ = session(broker, A, "watcher")
    broker.subscribe(watcher, A.mount_filter("will"), Q1)
    state, _ = session(broker, A, "dev", expiry=5, clean=False, live=False)
    broker.hold_will(state.key, Message(A.mount_topic("will"), b"gone", Q1), 60)
    dropped, wills = broker.tick(wall.now + 5)
    assert dropped == [state.key] and [w.payload for w in wills] == [b"gone"]


def test_grant_code_is_the_options_byte_plus_identifier_times_256():
    grant = Grant(QoS(2), no_local=True, retain_as_published=True, retain_handling=2,
                  identifier=300)
    assert grant.code == 2 | 4 | 8 | 32 | 300 * 256
    assert Grant.from_code(grant.code) == grant
    assert Grant(Q1).code == 1 and Grant(Q1).plain


def test_held_wills_are_released_when_the_gateway_stops(broker, wall):
    watcher, _ = session(broker, A, "watcher")
    broker.subscribe(watcher, A.mount_filter("will"), Q1)
    state, _ = session(broker, A, "dev", expiry=300, clean=False, live=False)
    broker.hold_will(state.key, Message(A.mount_topic("will"), b"gone", Q1), 60)
    assert [w.payload for w in broker.release_wills()] == [b"gone"]
    assert len(watcher.outbox) == 1 and broker.tick(wall.now + 100) == ([], [])


_LEVEL = st.sampled_from(["a", "b", "", "x1"])


@given(st.lists(st.one_of(_LEVEL, st.just("+")), min_size=1, max_size=5),
       st.booleans(), st.lists(_LEVEL, min_size=1, max_size=6))
def test_delivery_matching_agrees_with_the_cores_topic_matches(pattern, hash_end, topic):
    topic_filter = "/".join([*pattern, "#"] if hash_end else pattern)
    name = "/".join(["n", *topic])  # mounted: a network first, never a `$` level
    topic_filter = "n/" + topic_filter
    assert _matches(_split(topic_filter), name.split("/")) == topic_matches(topic_filter, name)
