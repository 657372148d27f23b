"""A Hypothesis state machine over the broker core: sessions, takeover, persistence, routing.

The model is the plain reading of MQTT 3.1.1 sections 3.1.2.4 and 3.3.5: a session per
(network, client id); clean_session=1 starts afresh and ends with the connection; a persistent
session keeps its subscriptions and QoS 1/2 messages while offline; a message goes once to
each session with a matching filter, at min(its QoS, the highest matching grant).
"""

from __future__ import annotations

import uuid
from itertools import count

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway.broker import Broker
from gateway.broker_state import Message
from gateway.jail import Jail
from gateway.mqtt.packets import QoS
from gateway.mqtt.topics import topic_matches
from gateway.reasons import DisconnectReason

NETWORKS = [str(uuid.UUID(int=1)), str(uuid.UUID(int=2))]
KEYS = [(n, c) for n in NETWORKS for c in ("x", "y")]
FILTERS = ["#", "a/#", "a/+", "a/b", "+/b", "b"]
TOPICS = ["a/b", "a/c", "b", "a", "c/b"]


class Outlet:
    def __init__(self) -> None:
        self.closed: list[DisconnectReason] = []

    def wake(self) -> None:
        pass

    def close(self, reason: DisconnectReason, detail: str | None = None) -> None:
        self.closed.append(reason)


class BrokerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.broker = Broker(max_queued=10_000)
        self.live: dict = {}
        self.model: dict = {}  # key -> {"clean": bool, "subs": {filter: qos}, "queue": [...]}
        self.payloads = count()

    @rule(key=st.sampled_from(KEYS), clean=st.booleans())
    def connect(self, key, clean):
        old = self.live.get(key)
        outlet = Outlet()
        attached = self.broker.connect(key, clean, outlet)
        assert attached is not None
        if old is not None:
            assert old.closed == [DisconnectReason.DUPLICATE_CLIENTID]
        existing = self.model.get(key)
        if existing is None or clean or existing["clean"]:
            assert not attached.session_present
            self.model[key] = {"clean": clean, "subs": {}, "queue": []}
        else:
            assert attached.session_present
        self.live[key] = outlet

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def disconnect(self, data):
        key = data.draw(st.sampled_from(sorted(self.live)))
        self.broker.disconnect(key, self.live.pop(key))
        session = self.model[key]
        if session["clean"]:
            del self.model[key]
        else:
            session["queue"] = [m for m in session["queue"] if m[2] > 0]

    @precondition(lambda self: self.live)
    @rule(data=st.data(), topic_filter=st.sampled_from(FILTERS), qos=st.sampled_from([0, 1, 2]))
    def subscribe(self, data, topic_filter, qos):
        key = data.draw(st.sampled_from(sorted(self.live)))
        state = self.broker.sessions.get(key)
        self.broker.subscribe(state, Jail(key[0]).mount_filter(topic_filter), QoS(qos))
        self.model[key]["subs"][topic_filter] = qos

    @precondition(lambda self: self.live)
    @rule(data=st.data(), topic_filter=st.sampled_from(FILTERS))
    def unsubscribe(self, data, topic_filter):
        key = data.draw(st.sampled_from(sorted(self.live)))
        state = self.broker.sessions.get(key)
        self.broker.unsubscribe(state, Jail(key[0]).mount_filter(topic_filter))
        self.model[key]["subs"].pop(topic_filter, None)

    @rule(network=st.sampled_from(NETWORKS), topic=st.sampled_from(TOPICS),
          qos=st.sampled_from([0, 1, 2]))
    def publish(self, network, topic, qos):
        payload = b"%d" % next(self.payloads)
        self.broker.publish(Message(Jail(network).mount_topic(topic), payload, QoS(qos)))
        for key, session in self.model.items():
            if key[0] != network:
                continue
            grants = [g for f, g in session["subs"].items() if topic_matches(f, topic)]
            if not grants:
                continue
            delivered = min(qos, max(grants))
            if key in self.live or delivered > 0:
                session["queue"].append((topic, payload, delivered))

    @invariant()
    def outboxes_hold_exactly_what_the_model_expects(self):
        for key in KEYS:
            state = self.broker.sessions.get(key)
            if key not in self.model:
                assert state is None
                continue
            jail = Jail(key[0])
            got = [(jail.unmount(m.topic), m.payload, int(m.qos)) for m in state.outbox]
            assert got == self.model[key]["queue"]


BrokerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30,
                                           deadline=None)
test_broker_follows_the_mqtt_session_model = BrokerMachine.TestCase
