"""Topic names, topic filters and their matching (OASIS MQTT 3.1.1, section 4.7).

Theory of operation: a topic is a sequence of levels separated by "/" (4.7.1.1); empty
levels are levels too ("a//b" has three, "/a" starts with an empty one). A topic name (what
a PUBLISH carries) holds no wildcard (MQTT-3.3.2-2, MQTT-4.7.1-1). A topic filter (what a
SUBSCRIBE carries) may use "#" alone in the last level, matching that level's parent and
everything below it (MQTT-4.7.1-2), and "+" alone in any level, matching exactly one level
(MQTT-4.7.1-3). Both are at least one character long (MQTT-4.7.3-1) and hold no U+0000
(MQTT-4.7.3-2). A filter starting with a wildcard never matches a name starting with "$"
(MQTT-4.7.2-1), so "#" does not see "$SYS/...".

Control characters (U+0001..U+001F, U+007F..U+009F) are refused in names and filters: both
versions let a receiver close the connection over them (3.1.1 section 1.5.3, 5.0 section
1.5.4), and these strings reach logs and dashboards. MQTT 5 shared subscriptions
(`$share/{ShareName}/{filter}`, section 4.8.2) are parsed by `split_shared`.

`SubscriptionTree` is a trie of filter levels: matching a name walks its levels once,
following the literal child, the "+" child and collecting the "#" child at every level, so
its cost grows with the name's depth and the matching subscriptions, not with the number of
filters stored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

from .errors import LocalProtocolError, RemoteProtocolError
from .packets import QoS

K = TypeVar("K", bound=Hashable)

_CONTROL = re.compile("[\x01-\x1f\x7f-\x9f]")
SHARE_PREFIX = "$share/"


def has_control_character(text: str) -> bool:
    """Whether `text` holds U+0001..U+001F or U+007F..U+009F (U+0000 is refused anyway)."""
    # isprintable() is a fast C loop and False for every control character; only strings
    # it refuses (non-ASCII spaces, format characters, ...) need the exact search.
    return not text.isprintable() and _CONTROL.search(text) is not None


def _check_common(topic: str, what: str) -> None:
    if not topic:
        raise RemoteProtocolError(f"a {what} must be at least one character", rule="MQTT-4.7.3-1")
    if "\x00" in topic:
        raise RemoteProtocolError(f"a {what} must not contain U+0000", rule="MQTT-4.7.3-2")
    if has_control_character(topic):
        raise RemoteProtocolError(
            f"a {what} must not contain control characters U+0001-U+001F, U+007F-U+009F"
        )
    if len(topic) > 16_383 and len(topic.encode("utf-8", "surrogatepass")) > 65_535:
        raise RemoteProtocolError(f"a {what} is at most 65535 bytes", rule="MQTT-4.7.3-3")


def validate_topic_name(name: str) -> None:
    """Check a topic name as a PUBLISH (or a will) carries it.

    Raises `RemoteProtocolError`: rule MQTT-3.3.2-2 for a wildcard, MQTT-4.7.3-1 when
    empty, MQTT-4.7.3-2 for U+0000, MQTT-4.7.3-3 past 65535 bytes.
    """
    _check_common(name, "topic name")
    if "+" in name or "#" in name:
        raise RemoteProtocolError(
            f"topic name {name!r} contains a wildcard character", rule="MQTT-3.3.2-2"
        )


def validate_topic_filter(topic_filter: str) -> None:
    """Check a topic filter as SUBSCRIBE and UNSUBSCRIBE carry it (section 4.7.1).

    Raises `RemoteProtocolError`: rule MQTT-4.7.1-2 for a "#" that is not alone in the last
    level, MQTT-4.7.1-3 for a "+" not alone in its level, MQTT-4.7.3-1 when empty,
    MQTT-4.7.3-2 for U+0000, MQTT-4.7.3-3 past 65535 bytes.
    """
    _check_common(topic_filter, "topic filter")
    if "#" in topic_filter:
        hash_at = topic_filter.index("#")
        if hash_at != len(topic_filter) - 1 or (hash_at > 0 and topic_filter[hash_at - 1] != "/"):
            raise RemoteProtocolError(
                f"'#' must be the last character, alone in its level: {topic_filter!r}",
                rule="MQTT-4.7.1-2",
            )
    if "+" in topic_filter:
        for level in topic_filter.split("/"):
            if "+" in level and level != "+":
                raise RemoteProtocolError(
                    f"'+' must occupy a whole level: {topic_filter!r}", rule="MQTT-4.7.1-3"
                )


def check_outgoing(validate: Callable[[str], object], topic: str) -> None:
    """Run `validate` (e.g. `validate_topic_name`) on a topic we are about to send: its
    failure is our own mistake, raised as `LocalProtocolError`."""
    try:
        validate(topic)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(str(exc)) from None


def split_shared(topic_filter: str) -> tuple[str, str] | None:
    """Split an MQTT 5 shared subscription `$share/{ShareName}/{filter}` (section 4.8.2).

    Returns `(share_name, filter)`, or None when `topic_filter` is not shared. The
    filter is validated as any filter; raises `RemoteProtocolError` (protocol error 0x82,
    MQTT-4.8.2-1, -2) for an empty ShareName, one holding "+", "#" or "/" (the first "/"
    after it ends it), or a missing filter.
    """
    if not topic_filter.startswith(SHARE_PREFIX):
        return None
    rest = topic_filter[len(SHARE_PREFIX):]
    share_name, slash, inner = rest.partition("/")
    if not share_name or "+" in share_name or "#" in share_name:
        raise RemoteProtocolError(
            f"shared subscription {topic_filter!r}: ShareName must be non-empty, without "
            "'+', '#' or '/'", rule="MQTT-4.8.2-2", reason_code=0x82,
        )
    if not slash or not inner:
        raise RemoteProtocolError(
            f"shared subscription {topic_filter!r} has no topic filter after its ShareName",
            rule="MQTT-4.8.2-1", reason_code=0x82,
        )
    validate_topic_filter(inner)
    return share_name, inner


def topic_matches(topic_filter: str, name: str) -> bool:
    """Whether a valid topic filter matches a valid topic name (section 4.7).

    "+" matches exactly one level (possibly empty), "#" matches its parent level and any
    number of levels below it ("a/#" matches "a", "a/" and "a/b/c"), and a filter starting
    with a wildcard does not match a name starting with "$" (MQTT-4.7.2-1).
    """
    if name[:1] == "$" and topic_filter[:1] in ("+", "#"):
        return False
    levels = name.split("/")
    pattern = topic_filter.split("/")
    for i, want in enumerate(pattern):
        if want == "#":
            return True
        if i >= len(levels):
            return False
        if want != "+" and want != levels[i]:
            return False
    return len(pattern) == len(levels)


class _Node(Generic[K]):
    __slots__ = ("children", "subscribers")

    def __init__(self) -> None:
        self.children: dict[str, _Node[K]] = {}
        self.subscribers: dict[K, QoS] = {}


class SubscriptionTree(Generic[K]):
    """Topic filters mapped to subscriber keys with their QoS, matched as a trie.

    A key subscribes at most once per filter: adding the same (filter, key) again replaces
    its QoS (MQTT-3.8.4-3). `match` collapses a key's overlapping subscriptions to the
    highest QoS among them (MQTT-3.3.5-1). Filters must already be valid (see
    `validate_topic_filter`); the tree does not check them again.
    """

    __slots__ = ("_root", "_by_key")

    def __init__(self) -> None:
        self._root: _Node[K] = _Node()
        self._by_key: dict[K, dict[str, QoS]] = {}

    def add(self, topic_filter: str, key: K, qos: QoS | int) -> None:
        """Subscribe `key` to `topic_filter` at `qos`, replacing an earlier QoS."""
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        qos = QoS(qos)
        node.subscribers[key] = qos
        self._by_key.setdefault(key, {})[topic_filter] = qos

    def remove(self, topic_filter: str, key: K) -> bool:
        """Unsubscribe `key` from exactly `topic_filter`. Returns whether it was subscribed."""
        path: list[tuple[_Node[K], str]] = []
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        if node.subscribers.pop(key, None) is None:
            return False
        filters = self._by_key[key]
        del filters[topic_filter]
        if not filters:
            del self._by_key[key]
        # Prune the branch bottom-up so that unsubscribed filters cost nothing later.
        for parent, level in reversed(path):
            child = parent.children[level]
            if child.subscribers or child.children:
                break
            del parent.children[level]
        return True

    def remove_key(self, key: K) -> int:
        """Drop every subscription of `key` (a clean session ends). Returns how many."""
        filters = list(self._by_key.get(key, ()))
        for topic_filter in filters:
            self.remove(topic_filter, key)
        return len(filters)

    def subscriptions(self, key: K) -> dict[str, QoS]:
        """The filters `key` is subscribed to, with their QoS (a copy)."""
        return dict(self._by_key.get(key, {}))

    def __len__(self) -> int:
        """The number of (filter, key) subscriptions held."""
        return sum(len(filters) for filters in self._by_key.values())

    def __iter__(self) -> Iterator[tuple[str, K, QoS]]:
        """Every subscription as (filter, key, qos)."""
        for key, filters in self._by_key.items():
            for topic_filter, qos in filters.items():
                yield topic_filter, key, qos

    def match(self, name: str) -> dict[K, QoS]:
        """Every key with a filter matching topic name `name`, with its highest QoS."""
        result: dict[K, QoS] = {}
        levels = name.split("/")
        last = len(levels)
        # The "$" rule (MQTT-4.7.2-1) only bars wildcards in the first level of a filter.
        dollar = name[:1] == "$"
        stack: list[tuple[_Node[K], int]] = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            children = node.children
            if not children:
                continue
            wildcards_allowed = not (dollar and depth == 0)
            if wildcards_allowed:
                hash_node = children.get("#")
                if hash_node is not None:
                    _collect(hash_node.subscribers, result)
            if depth == last:
                continue
            child = children.get(levels[depth])
            if child is not None:
                if depth + 1 == last:
                    _collect(child.subscribers, result)
                stack.append((child, depth + 1))
            if wildcards_allowed:
                plus = children.get("+")
                if plus is not None:
                    if depth + 1 == last:
                        _collect(plus.subscribers, result)
                    stack.append((plus, depth + 1))
        return result


def _collect(subscribers: dict[K, QoS], result: dict[K, QoS]) -> None:
    for key, qos in subscribers.items():
        have = result.get(key)
        if have is None or qos > have:
            result[key] = qos
