"""Topic names, filters and matching (MQTT 3.1.1 section 4.7), and the subscription trie."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import qos_levels, topic_filters, topic_names

from gateway.mqtt import QoS, RemoteProtocolError
from gateway.mqtt.topics import (
    SubscriptionTree,
    topic_matches,
    validate_topic_filter,
    validate_topic_name,
)

# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "name", ["a", "/", "a/b", "/finance", "a//b", "sport/tennis/player1", "$SYS/x", " ", "\ufeff"]
)
def test_valid_topic_names_pass(name: str) -> None:
    validate_topic_name(name)


@pytest.mark.parametrize("name", ["+", "#", "a/+", "a/#", "sport+", "a/b#"])
def test_MQTT_3_3_2_2_topic_name_with_wildcard_is_refused(name: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        validate_topic_name(name)
    assert caught.value.rule == "MQTT-3.3.2-2"


@pytest.mark.parametrize("validate", [validate_topic_name, validate_topic_filter])
def test_MQTT_4_7_3_1_empty_topic_is_refused(validate) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RemoteProtocolError) as caught:
        validate("")
    assert caught.value.rule == "MQTT-4.7.3-1"


@pytest.mark.parametrize("validate", [validate_topic_name, validate_topic_filter])
def test_MQTT_4_7_3_2_topic_with_null_character_is_refused(validate) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RemoteProtocolError) as caught:
        validate("a\x00b")
    assert caught.value.rule == "MQTT-4.7.3-2"


@pytest.mark.parametrize("validate", [validate_topic_name, validate_topic_filter])
def test_MQTT_4_7_3_3_topic_longer_than_65535_bytes_is_refused(validate) -> None:  # type: ignore[no-untyped-def]
    validate("\u00e9" * 32_767)  # 65,534 bytes
    with pytest.raises(RemoteProtocolError) as caught:
        validate("\u00e9" * 32_768)
    assert caught.value.rule == "MQTT-4.7.3-3"


# Section 4.7.1.2 and 4.7.1.3 give these examples of valid and invalid filters.
@pytest.mark.parametrize(
    "topic_filter",
    ["#", "sport/#", "sport/tennis/#", "+", "+/tennis/#", "sport/+/player1", "/+", "+/+", "a//+"],
)
def test_valid_topic_filters_of_section_4_7_1_pass(topic_filter: str) -> None:
    validate_topic_filter(topic_filter)


@pytest.mark.parametrize("topic_filter", ["sport/tennis#", "sport/tennis/#/ranking", "#/", "a/##"])
def test_MQTT_4_7_1_2_hash_not_last_or_not_alone_is_refused(topic_filter: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        validate_topic_filter(topic_filter)
    assert caught.value.rule == "MQTT-4.7.1-2"


@pytest.mark.parametrize("topic_filter", ["sport+", "a/+b", "++", "+a/b"])
def test_MQTT_4_7_1_3_plus_not_alone_in_its_level_is_refused(topic_filter: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        validate_topic_filter(topic_filter)
    assert caught.value.rule == "MQTT-4.7.1-3"


# --------------------------------------------------------------------------- matching

# (filter, name, matches): the examples of sections 4.7.1.2, 4.7.1.3 and 4.7.2.
MATCH_EXAMPLES = [
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),  # "#" also matches the parent level
    ("#", "sport/tennis", True),
    ("#", "/", True),
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player2", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),  # "+" matches an empty level
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("a/b", "a/b", True),
    ("a/b", "a/B", False),  # case sensitive (4.7.3)
    ("a/b", "a/b/", False),
    ("a//b", "a//b", True),
    ("+/b", "/b", True),
    # 4.7.2: wildcards in the first level do not match "$" topics.
    ("#", "$SYS/monitor/Clients", False),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("$SYS/#", "$SYS/monitor/Clients", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("a/#", "a/$b", True),  # the rule binds only the first level
]


@pytest.mark.parametrize(("topic_filter", "name", "expected"), MATCH_EXAMPLES)
def test_topic_matching_follows_the_examples_of_section_4_7(
    topic_filter: str, name: str, expected: bool
) -> None:
    assert topic_matches(topic_filter, name) is expected


@pytest.mark.parametrize(("topic_filter", "name", "expected"), MATCH_EXAMPLES)
def test_subscription_tree_follows_the_examples_of_section_4_7(
    topic_filter: str, name: str, expected: bool
) -> None:
    tree: SubscriptionTree[str] = SubscriptionTree()
    tree.add(topic_filter, "k", QoS.AT_LEAST_ONCE)
    assert tree.match(name) == ({"k": QoS.AT_LEAST_ONCE} if expected else {})


@given(topic_names())
def test_a_filter_equal_to_the_name_matches_it(name: str) -> None:
    validate_topic_name(name)
    validate_topic_filter(name)
    assert topic_matches(name, name)


@given(topic_names())
def test_MQTT_4_7_2_1_hash_matches_every_name_not_starting_with_dollar(name: str) -> None:
    assert topic_matches("#", name) is not name.startswith("$")


@given(topic_names())
def test_plus_per_level_matches_exactly_the_names_of_that_depth(name: str) -> None:
    depth = name.count("/") + 1
    for levels in range(1, depth + 2):
        expected = levels == depth and not name.startswith("$")
        assert topic_matches("/".join(["+"] * levels), name) is expected


@given(topic_names(), topic_names())
def test_parent_hash_matches_the_name_and_its_descendants(parent: str, child: str) -> None:
    if parent.startswith("$"):
        return
    assert topic_matches(parent + "/#", parent)
    assert topic_matches(parent + "/#", parent + "/" + child)


@given(topic_filters())
def test_generated_topic_filters_are_valid(topic_filter: str) -> None:
    validate_topic_filter(topic_filter)


# --------------------------------------------------------------------------- the trie


def test_MQTT_3_3_5_1_overlapping_subscriptions_collapse_to_the_highest_qos() -> None:
    tree: SubscriptionTree[str] = SubscriptionTree()
    tree.add("a/#", "dev", QoS.AT_MOST_ONCE)
    tree.add("a/+", "dev", QoS.EXACTLY_ONCE)
    tree.add("a/b", "dev", QoS.AT_LEAST_ONCE)
    tree.add("a/b", "other", QoS.AT_MOST_ONCE)
    assert tree.match("a/b") == {"dev": QoS.EXACTLY_ONCE, "other": QoS.AT_MOST_ONCE}
    assert tree.match("a") == {"dev": QoS.AT_MOST_ONCE}


def test_MQTT_3_8_4_3_subscribing_again_replaces_the_qos() -> None:
    tree: SubscriptionTree[str] = SubscriptionTree()
    tree.add("a/b", "dev", QoS.EXACTLY_ONCE)
    tree.add("a/b", "dev", QoS.AT_MOST_ONCE)
    assert tree.match("a/b") == {"dev": QoS.AT_MOST_ONCE}
    assert len(tree) == 1


def test_remove_drops_only_that_filter_of_that_key() -> None:
    tree: SubscriptionTree[str] = SubscriptionTree()
    tree.add("a/+", "dev", QoS.AT_LEAST_ONCE)
    tree.add("a/b", "dev", QoS.AT_MOST_ONCE)
    tree.add("a/+", "other", QoS.AT_MOST_ONCE)
    assert tree.remove("a/+", "dev") is True
    assert tree.remove("a/+", "dev") is False
    assert tree.remove("x/y", "dev") is False
    assert tree.match("a/b") == {"dev": QoS.AT_MOST_ONCE, "other": QoS.AT_MOST_ONCE}
    assert tree.subscriptions("dev") == {"a/b": QoS.AT_MOST_ONCE}


def test_remove_key_drops_every_subscription_of_a_session() -> None:
    tree: SubscriptionTree[str] = SubscriptionTree()
    for topic_filter in ("a/#", "b", "+/c"):
        tree.add(topic_filter, "dev", QoS.AT_LEAST_ONCE)
    tree.add("b", "other", QoS.AT_MOST_ONCE)
    assert tree.remove_key("dev") == 3
    assert tree.match("b") == {"other": QoS.AT_MOST_ONCE}
    assert tree.match("a/c") == {}
    assert list(tree) == [("b", "other", QoS.AT_MOST_ONCE)]


def test_removing_everything_leaves_an_empty_trie() -> None:
    tree: SubscriptionTree[str] = SubscriptionTree()
    tree.add("a/b/c/d", "k", QoS.AT_MOST_ONCE)
    tree.add("a/b", "k", QoS.AT_MOST_ONCE)
    tree.remove("a/b/c/d", "k")
    tree.remove("a/b", "k")
    assert len(tree) == 0
    assert tree._root.children == {}  # pruned, so dead branches cost nothing later


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(topic_filters(), st.sampled_from(["k1", "k2", "k3"]), qos_levels), max_size=12
    ),
    st.lists(st.integers(0, 11), max_size=4),
    st.lists(topic_names(), min_size=1, max_size=6),
)
def test_subscription_tree_agrees_with_topic_matches(
    subscriptions: list[tuple[str, str, QoS]], removals: list[int], names: list[str]
) -> None:
    tree: SubscriptionTree[str] = SubscriptionTree()
    model: dict[tuple[str, str], QoS] = {}
    for topic_filter, key, qos in subscriptions:
        tree.add(topic_filter, key, qos)
        model[(topic_filter, key)] = qos
    for index in removals:
        if index < len(subscriptions):
            topic_filter, key, _ = subscriptions[index]
            assert tree.remove(topic_filter, key) is ((topic_filter, key) in model)
            model.pop((topic_filter, key), None)
    assert len(tree) == len(model)
    for name in names:
        expected: dict[str, QoS] = {}
        for (topic_filter, key), qos in model.items():
            if topic_matches(topic_filter, name):
                expected[key] = max(qos, expected.get(key, QoS.AT_MOST_ONCE))
        assert tree.match(name) == expected
