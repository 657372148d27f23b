"""Retained messages in a topic tree, so a SUBSCRIBE costs what it delivers.

Theory of operation (MQTT 3.1.1 sections 3.3.1.3 and 4.7). Topics reach this module mounted
(`<network-uuid>/...`), so the tree's first level is the network: each jail is its own
subtree, and a mounted filter, whose first level is always its network's UUID, can only walk
inside it. A node holds at most one retained message (one per topic, MQTT-3.3.1-5) and its
children by level name; a node left with neither is pruned on `clear`, so every node leads to
at least one message and a walk costs in proportion to what it can deliver.

`matching(filter)` is a generator walking only the branches the filter can reach: a plain
level follows one child, `+` every child of one level, `#` the whole subtree (its parent
level included: "a/#" matches "a"). A wildcard first level does not match `$`-topics
(MQTT-4.7.2-1), exactly as `gateway.mqtt.topics.topic_matches` decides; inside a jail the
first level is the network's UUID, so this changes nothing there, as before.

The generator reads each node's message when it reaches it, and copies a node's child list
only when it expands that node (references, each leading to a message), so sets and clears
between two `next()` calls never break it: a message replaced before the walk reaches it is
seen in its new version, one added behind the walk is not seen (its subscriber gets it routed
as a live message anyway).

Sans-IO: no trio, no sockets; counts and bytes per network for the broker's limits.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

__all__ = ["Retainable", "RetainedStore", "RetainedTree", "retained_size"]


class Retainable(Protocol):
    @property
    def topic(self) -> str: ...

    @property
    def payload(self) -> bytes: ...


M = TypeVar("M", bound=Retainable)


class RetainedStore(Protocol[M]):
    """Where the broker's retained messages live (`RetainedTree` in memory; a durable store
    in `gateway.persistence` journals each change)."""

    def set(self, message: M) -> None: ...

    def clear(self, topic: str) -> None: ...

    def matching(self, mounted_filter: str) -> Iterator[M]:
        """Lazily, the retained messages `mounted_filter` matches (cost: what it reaches)."""
        ...

    def get(self, topic: str) -> M | None: ...

    def count(self, network: str) -> int: ...

    def bytes(self, network: str) -> int: ...

    def has(self, topic: str) -> bool: ...


def retained_size(message: Retainable) -> int:
    """The bytes a retained message is charged against its network: payload plus topic."""
    return len(message.payload) + len(message.topic)


class _RetainedNode(Generic[M]):
    __slots__ = ("children", "message")

    def __init__(self) -> None:
        self.children: dict[str, _RetainedNode[M]] = {}
        self.message: M | None = None


class RetainedTree(Generic[M]):
    """At most one message per mounted topic, with per-network counts and bytes."""

    def __init__(self) -> None:
        self._root: _RetainedNode[M] = _RetainedNode()
        self._count: dict[str, int] = {}
        self._bytes: dict[str, int] = {}

    def set(self, message: M) -> None:
        """Retain `message` for its topic, replacing the one there."""
        node = self._root
        for level in message.topic.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _RetainedNode()
            node = child
        network = message.topic.partition("/")[0]
        old = node.message
        if old is None:
            self._count[network] = self._count.get(network, 0) + 1
        else:
            self._bytes[network] -= retained_size(old)
        self._bytes[network] = self._bytes.get(network, 0) + retained_size(message)
        node.message = message

    def clear(self, topic: str) -> None:
        """Forget the message retained for `topic` (none: nothing happens)."""
        path: list[tuple[_RetainedNode[M], str]] = []
        node = self._root
        for level in topic.split("/"):
            child = node.children.get(level)
            if child is None:
                return
            path.append((node, level))
            node = child
        old = node.message
        if old is None:
            return
        node.message = None
        network = topic.partition("/")[0]
        self._count[network] -= 1
        self._bytes[network] -= retained_size(old)
        if not self._count[network]:
            del self._count[network], self._bytes[network]
        # Prune the branch up to the first node still holding something.
        for parent, level in reversed(path):
            child = parent.children[level]
            if child.message is not None or child.children:
                break
            del parent.children[level]

    def get(self, topic: str) -> M | None:
        node: _RetainedNode[M] | None = self._root
        for level in topic.split("/"):
            node = node.children.get(level)
            if node is None:
                return None
        return node.message

    def has(self, topic: str) -> bool:
        return self.get(topic) is not None

    def count(self, network: str) -> int:
        return self._count.get(network, 0)

    def bytes(self, network: str) -> int:
        """Bytes retained by `network` (see `retained_size`)."""
        return self._bytes.get(network, 0)

    def __len__(self) -> int:
        return sum(self._count.values())

    def matching(self, topic_filter: str) -> Iterator[M]:
        """Yield, lazily, every retained message whose topic `topic_filter` matches.

        `topic_filter` must be a valid filter (section 4.7.1). The cost is the nodes on the
        branches the filter reaches, never the number of retained messages elsewhere.
        """
        pattern = topic_filter.split("/")
        last = len(pattern)
        # Depth-first with an explicit stack: topics may have thousands of levels.
        stack: list[tuple[_RetainedNode[M], int]] = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            if depth == last:
                if node.message is not None:
                    yield node.message
                continue
            want = pattern[depth]
            if want == "#":
                yield from self._subtree(node, skip_dollar=depth == 0)
            elif want == "+":
                children = [c for name, c in node.children.items()
                            if not (depth == 0 and name[:1] == "$")]
                stack.extend((c, depth + 1) for c in reversed(children))
            else:
                child = node.children.get(want)
                if child is not None:
                    stack.append((child, depth + 1))

    @staticmethod
    def _subtree(node: _RetainedNode[M], *, skip_dollar: bool) -> Iterator[M]:
        """`node`'s own message (the `#` parent level) and every message below it."""
        if node.message is not None:
            yield node.message
        children = [c for name, c in node.children.items()
                    if not (skip_dollar and name[:1] == "$")]
        stack = [iter(children)]
        while stack:
            child = next(stack[-1], None)
            if child is None:
                stack.pop()
                continue
            if child.message is not None:
                yield child.message
            if child.children:
                stack.append(iter(list(child.children.values())))
