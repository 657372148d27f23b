"""The retained topic tree, the broker's retained and subscription limits, and how one
SUBSCRIBE's filters are examined (no sockets: `gateway.retained`, `gateway.subscriptions`)."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.broker import Broker
from gateway.broker_state import Message
from gateway.jail import Jail
from gateway.mqtt.packets import SUBACK_FAILURE, QoS
from gateway.mqtt.topics import topic_matches
from gateway.retained import RetainedTree, retained_size
from gateway.subscriptions import LOGGED_FILTERS, examine

NET_A = str(uuid.UUID(int=0xA))
NET_B = str(uuid.UUID(int=0xB))

# Few level names, so that topics share branches and filters hit them.
_level = st.sampled_from(["a", "b", "", "$s", "c"])
_topic = st.lists(_level, min_size=1, max_size=4).map("/".join)
_filter_level = st.sampled_from(["a", "b", "", "$s", "+"])
_filter = st.tuples(st.lists(_filter_level, min_size=0, max_size=4), st.booleans()).map(
    lambda t: "/".join(t[0] + ["#"]) if t[1] or not t[0] else "/".join(t[0]))
_network = st.sampled_from([NET_A, NET_B, "$net"])


@settings(max_examples=500, deadline=None)
@given(
    ops=st.lists(st.tuples(st.booleans(), _network, _topic, st.binary(max_size=3)), max_size=30),
    filters=st.lists(st.tuples(st.sampled_from([NET_A, NET_B, "+", "#"]), _filter),
                     min_size=1, max_size=6),
)
def test_matching_returns_exactly_what_scanning_every_topic_returned(ops, filters):
    tree: RetainedTree[Message] = RetainedTree()
    model: dict[str, Message] = {}  # what the old store held: a dict scanned with topic_matches
    for keep, network, topic, payload in ops:
        mounted = f"{network}/{topic}"
        if keep:
            tree.set(Message(mounted, payload or b"x"))
            model[mounted] = Message(mounted, payload or b"x")
        else:
            tree.clear(mounted)
            model.pop(mounted, None)
    for first, rest in filters:
        mounted_filter = first if first == "#" else f"{first}/{rest}"
        got = sorted((m.topic, m.payload) for m in tree.matching(mounted_filter))
        want = sorted((t, m.payload) for t, m in model.items()
                      if topic_matches(mounted_filter, t))
        assert got == want, mounted_filter
    for network in (NET_A, NET_B, "$net"):
        held = [m for t, m in model.items() if t.partition("/")[0] == network]
        assert tree.count(network) == len(held)
        assert tree.bytes(network) == sum(retained_size(m) for m in held)
    assert len(tree) == len(model)


def test_clearing_prunes_the_branch_so_a_walk_never_visits_empty_nodes():
    tree: RetainedTree[Message] = RetainedTree()
    tree.set(Message(f"{NET_A}/a/b/c", b"1"))
    tree.set(Message(f"{NET_A}/a", b"2"))
    tree.clear(f"{NET_A}/a/b/c")
    assert tree._root.children[NET_A].children["a"].children == {}
    tree.clear(f"{NET_A}/a")
    assert tree._root.children == {}
    assert tree.count(NET_A) == 0 and tree.bytes(NET_A) == 0


def test_matching_is_lazy_and_survives_changes_between_two_messages():
    tree: RetainedTree[Message] = RetainedTree()
    for i in range(100):
        tree.set(Message(f"{NET_A}/t/{i}", b"old"))
    walk = tree.matching(f"{NET_A}/#")
    first = next(walk)
    # The erasure path clears what it walks; a device replaces what is not yet reached.
    tree.clear(first.topic)
    untouched = {f"{NET_A}/t/{i}" for i in range(100)} - {first.topic}
    for topic in untouched:
        tree.set(Message(topic, b"new"))
    rest = list(walk)
    assert {m.topic for m in rest} == untouched
    assert {m.payload for m in rest} == {b"new"}  # read when reached: never a stale copy


def test_a_deep_topic_does_not_exhaust_the_stack():
    tree: RetainedTree[Message] = RetainedTree()
    deep = f"{NET_A}/" + "/".join(["x"] * 5000)
    tree.set(Message(deep, b"d"))
    assert [m.topic for m in tree.matching(f"{NET_A}/#")] == [deep]
    assert [m.topic for m in tree.matching(deep)] == [deep]


class _Outlet:
    def wake(self) -> None:
        pass

    def close(self, reason, detail=None) -> None:
        raise AssertionError(f"closed: {reason}")


def _session(broker: Broker, net: str, client_id: str):
    attached = broker.connect((net, client_id), True, _Outlet())
    assert attached is not None
    return attached.state


def test_retained_bytes_over_the_network_cap_are_routed_not_retained_and_counted():
    jail = Jail(NET_A)
    topic = jail.mount_topic("r")
    cap = 2 * (len(topic) + 100)
    broker = Broker(max_retained_bytes_per_network=cap)
    state = _session(broker, NET_A, "a")
    broker.subscribe(state, jail.mount_filter("#"), QoS.AT_MOST_ONCE)
    broker.publish(Message(topic, b"1" * 100, retain=True))
    broker.publish(Message(jail.mount_topic("s"), b"2" * 100, retain=True))
    assert broker.retained.bytes(NET_A) == cap
    broker.publish(Message(jail.mount_topic("q"), b"3", retain=True))  # over: not kept
    assert not broker.retained.has(jail.mount_topic("q"))
    broker.publish(Message(topic, b"4" * 50, retain=True))  # smaller replacement: kept
    assert broker.retained.get(topic).payload == b"4" * 50
    broker.publish(Message(topic, b"5" * 500, retain=True))  # larger: not kept, old gone
    assert not broker.retained.has(topic)
    assert [m.payload[:1] for m in state.outbox] == [b"1", b"2", b"3", b"4", b"5"]
    assert broker.statistics()["retained_refused_bytes"] == 2
    broker.publish(Message(Jail(NET_B).mount_topic("r"), b"b" * 100, retain=True))
    assert broker.retained.count(NET_B) == 1  # another network's budget is its own


def test_a_session_cannot_hold_more_subscriptions_than_its_cap_but_can_replace_one():
    broker = Broker(max_subscriptions_per_session=2)
    jail = Jail(NET_A)
    state = _session(broker, NET_A, "a")
    assert broker.subscribe(state, jail.mount_filter("a"), QoS.AT_MOST_ONCE)
    assert broker.subscribe(state, jail.mount_filter("b"), QoS.AT_MOST_ONCE)
    assert not broker.subscribe(state, jail.mount_filter("c"), QoS.AT_MOST_ONCE)
    assert broker.subscribe(state, jail.mount_filter("a"), QoS.AT_LEAST_ONCE)  # replace
    assert state.subscriptions == {jail.mount_filter("a"): QoS.AT_LEAST_ONCE,
                                   jail.mount_filter("b"): QoS.AT_MOST_ONCE}
    assert broker.statistics()["subscriptions_refused"] == 1
    broker.publish(Message(jail.mount_topic("c"), b"x", QoS.AT_LEAST_ONCE))
    assert not state.outbox  # the refused filter routes nothing


def test_retained_for_a_new_subscription_is_lazy_and_downgraded_to_the_granted_qos():
    broker = Broker()
    jail = Jail(NET_A)
    for i in range(3):
        broker.publish(Message(jail.mount_topic(f"r/{i}"), b"x", QoS.EXACTLY_ONCE, True))
    stream = broker.retained_for(jail.mount_filter("r/+"), QoS.AT_LEAST_ONCE)
    first = next(stream)
    assert first.retain and first.qos == QoS.AT_LEAST_ONCE
    assert len(list(stream)) == 2


def test_duplicate_filters_are_examined_once_and_the_last_qos_wins():
    request = examine([("a", 0), ("b", 1), ("a", 2), ("$SYS/x", 1), ("$SYS/x", 0)],
                      Jail(NET_A), max_filters=64)
    assert request.wanted == {"a": (f"{NET_A}/a", QoS.EXACTLY_ONCE),
                              "b": (f"{NET_A}/b", QoS.AT_LEAST_ONCE)}
    assert request.duplicates == 2
    for f, (_, qos) in request.wanted.items():
        request.granted[f] = int(qos)
    # One code per filter of the packet, each the QoS its occurrence asked (MQTT-3.8.4-5).
    assert request.codes() == [0, 1, 2, SUBACK_FAILURE, SUBACK_FAILURE]


def test_filters_past_the_per_subscribe_cap_are_refused_unexamined_in_one_summary():
    filters = [("#", 1)] * 3 + [("$bad", 1)] + [(f"f/{i}", 1) for i in range(10_000)]
    request = examine(filters, Jail(NET_A), max_filters=8)
    assert list(request.wanted) == ["#", "f/0", "f/1", "f/2", "f/3"]
    assert request.unexamined == len(filters) - 8
    request.granted.update({f: 1 for f in request.wanted})
    codes = request.codes()
    assert len(codes) == len(filters)
    assert codes[:8] == [1, 1, 1, SUBACK_FAILURE, 1, 1, 1, 1]
    assert set(codes[8:]) == {SUBACK_FAILURE}
    summary = request.refusal_summary()
    assert summary is not None
    assert summary["refused"] == 1 + len(filters) - 8
    assert summary["reasons"] == {"$-topics are reserved to the server": 1,
                                  "max_filters_per_subscribe": len(filters) - 8}
    assert summary["filters"] == ["$bad", "f/4", "f/5", "f/6", "f/7"]
    logged = request.logged()
    assert logged["filter_count"] == len(filters) and len(logged["filters"]) == LOGGED_FILTERS


def test_a_subscribe_without_refusals_has_no_refusal_line_and_long_filters_are_clipped():
    long = "x" * 1000
    request = examine([(long, 0)], Jail(NET_A), max_filters=64)
    assert request.refusal_summary() is None
    assert len(request.logged()["filters"][0]) < 200
