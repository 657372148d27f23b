"""The broker's cluster seam without I/O: what a peer hears (publishes with their retained
outcome, networks gaining or losing subscriptions here), relayed messages routed locally
and never relayed again, and a persistent session moved in and out of memory untouched."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.broker import Broker
from gateway.broker_state import Message, SessionState
from gateway.cluster.relay import decode_relay, encode_relay
from gateway.mqtt.packets import QoS
from gateway.mqtt.properties import make_properties

NET, OTHER = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"


class Peer:
    def __init__(self) -> None:
        self.relayed: list[tuple[Message, Message | None]] = []
        self.interest: list[tuple[str, bool]] = []
        self.ended: list[tuple[tuple[str, str], bool]] = []

    def relay(self, message, kept) -> None:
        self.relayed.append((message, kept))

    def interest_(self, network, present) -> None:
        self.interest.append((network, present))


class Outlet:
    def __init__(self) -> None:
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1

    def close(self, reason, detail=None) -> None:
        pass


def _broker(**kw) -> tuple[Broker, Peer]:
    peer = Peer()

    class Adapter:
        relay = peer.relay
        interest = peer.interest_

        @staticmethod
        def ended(key, persistent) -> None:
            peer.ended.append((key, persistent))

    return Broker(peer=Adapter(), **kw), peer


def test_interest_is_told_on_the_first_and_last_subscription_of_a_network() -> None:
    broker, peer = _broker()
    one = broker.connect((NET, "one"), True, Outlet()).state
    two = broker.connect((NET, "two"), True, Outlet()).state
    broker.subscribe(one, f"{NET}/a/#", QoS(1))
    broker.subscribe(one, f"{NET}/b", QoS(0))
    broker.subscribe(two, f"{NET}/a/#", QoS(1))
    broker.subscribe(one, f"{NET}/b", QoS(1))  # a replacement is not a new filter
    assert peer.interest == [(NET, True)]
    broker.unsubscribe(one, f"{NET}/a/#")
    broker.disconnect((NET, "one"), broker.live()[(NET, "one")])  # clean: its filters go
    assert peer.interest == [(NET, True)]
    broker.unsubscribe(two, f"{NET}/a/#")
    assert peer.interest == [(NET, True), (NET, False)]
    assert peer.ended == [((NET, "one"), False)]


def test_a_publish_is_relayed_after_local_routing_with_its_retained_outcome() -> None:
    broker, peer = _broker(max_retained_per_network=1)
    broker.publish(Message(f"{NET}/x", b"1", QoS(1)))
    broker.publish(Message(f"{NET}/r", b"kept", QoS(1), True))
    broker.publish(Message(f"{NET}/s", b"over the cap", QoS(1), True))
    broker.publish(Message(f"{NET}/r", b"", QoS(0), True))
    assert [(m.payload, kept and kept.payload) for m, kept in peer.relayed] == [
        (b"1", None), (b"kept", b"kept"), (b"over the cap", None), (b"", None)]


def test_a_relayed_message_reaches_local_sessions_and_is_not_relayed_again() -> None:
    broker, peer = _broker()
    outlet = Outlet()
    state = broker.connect((NET, "sub"), True, outlet).state
    broker.subscribe(state, f"{NET}/#", QoS(1))
    broker.connect((OTHER, "stranger"), True, Outlet())
    message = Message(f"{NET}/t", b"p", QoS(2), True)
    assert broker.publish_relayed(message, Message(f"{NET}/t", b"p", QoS(2), True)) == 1
    assert peer.relayed == []
    assert [(m.payload, m.qos, m.retain) for m in state.outbox] == [(b"p", QoS(1), False)]
    assert broker.retained.get(f"{NET}/t").payload == b"p"  # the mirror
    broker.publish_relayed(Message(f"{NET}/t", b"", QoS(0), True), None)
    assert broker.retained.get(f"{NET}/t") is None


def test_adopt_and_release_move_a_persistent_session_in_memory_only() -> None:
    broker, peer = _broker()
    state = SessionState((NET, "keeper"), False, 10, {f"{NET}/in/#": QoS(1)})
    state.stored, state.queued_bytes = 2, 40
    broker.adopt(state)
    assert peer.interest == [(NET, True)]
    assert broker.queued_bytes(NET) == 40
    broker.publish(Message(f"{NET}/in/x", b"q", QoS(1)))
    assert [m.payload for m in state.outbox] == [b"q"]  # queued here: this node owns it
    assert broker.release((NET, "keeper")) is state
    assert broker.sessions.get((NET, "keeper")) is None
    assert peer.interest == [(NET, True), (NET, False)]
    assert broker.queued_bytes(NET) == 0
    assert broker.publish(Message(f"{NET}/in/x", b"later", QoS(1))) == 0


def test_release_leaves_a_live_session_alone() -> None:
    broker, _ = _broker()
    broker.connect((NET, "live"), False, Outlet())
    assert broker.release((NET, "live")) is None
    assert broker.sessions.get((NET, "live")) is not None


@given(topic=st.text(min_size=1, max_size=50).map(lambda t: f"{NET}/{t}"),
       payload=st.binary(max_size=300), qos=st.sampled_from(list(QoS)),
       retain=st.booleans(), kept=st.booleans(), now=st.floats(0, 2e9),
       expires=st.none() | st.floats(0, 2e9), v5=st.booleans())
def test_the_relay_body_round_trips(topic, payload, qos, retain, kept, now, expires,
                                    v5) -> None:
    props = make_properties(content_type="text/plain", user_properties=(("k", "v"),),
                            response_topic=f"{NET}/answers") if v5 else None
    message = Message(topic, payload, qos, retain, props=props, expires_at=expires)
    stored = Message(topic, payload, qos, True, props=props,
                     expires_at=expires) if retain and kept else None
    relayed = decode_relay(encode_relay(message, stored, now))
    assert relayed.message == message
    assert relayed.kept == stored
    assert abs(relayed.sent_at - now) < 1e-5


def test_a_session_past_its_mqtt5_expiry_leaves_the_registry_too() -> None:
    now = [1000.0]
    broker, peer = _broker(clock=lambda: now[0])
    outlet = Outlet()
    broker.connect((NET, "v5"), False, outlet, expiry=30)
    broker.disconnect((NET, "v5"), outlet)
    assert peer.ended == [((NET, "v5"), True)]  # offline, still this node's
    now[0] += 31
    assert broker.tick()[0] == [(NET, "v5")]
    assert peer.ended == [((NET, "v5"), True), ((NET, "v5"), False)]


def test_release_forgets_a_held_will_and_the_sessions_expiry() -> None:
    now = [1000.0]
    broker, peer = _broker(clock=lambda: now[0])
    outlet = Outlet()
    broker.connect((NET, "v5"), False, outlet, expiry=30)
    broker.disconnect((NET, "v5"), outlet)
    broker.hold_will((NET, "v5"), Message(f"{NET}/will", b"w"), 10)
    assert broker.release((NET, "v5")) is not None  # resumed on another node
    now[0] += 60
    assert broker.tick() == ([], [])  # neither the will nor the expiry fire here
    assert peer.relayed == []
