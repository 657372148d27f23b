"""Shared subscriptions inside a jail (MQTT 5.0 section 4.8.2), without I/O.

Theory of operation. A device subscribes to `$share/{group}/{filter}`; the jail mounts it as
`$share/{group}/{network}/{filter}` (`Jail.mount_filter`), so the filter part is mounted like
any filter and a group is always one network's: two jails naming the same group share
nothing. The broker's subscription tree holds each (group, mounted filter) once, under a
`GroupKey`; matching a topic yields the group, and the group hands each message to ONE of its
members (MQTT-4.8.2-1 onwards): round robin over the live members, so the load spreads over
the connected devices; when none is connected, round robin over the persistent ones, whose
queues hold it for their return. A member's grant (QoS, identifier) applies to its copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .delivery import SHARE_PREFIX, Grant
from .mqtt.packets import QoS

__all__ = ["GroupKey", "SharedGroup", "SharedGroups", "split_shared"]


class GroupKey(NamedTuple):
    """A shared subscription's key in the broker's subscription tree (a session key is a
    2-tuple, this a 3-tuple: the two never collide)."""

    share: str  # always "$share"
    group: str
    mounted_filter: str


def split_shared(topic_filter: str) -> tuple[str, str] | None:
    """(group, filter) of a `$share/{group}/{filter}` filter, else None. The core checked
    the syntax (a non-empty group without wildcards, a filter after it)."""
    if not topic_filter.startswith(SHARE_PREFIX):
        return None
    group, _, rest = topic_filter[len(SHARE_PREFIX):].partition("/")
    return group, rest


@dataclass(slots=True)
class SharedGroup:
    """The members of one shared subscription, each with its grant."""

    members: dict[tuple[str, str], Grant] = field(default_factory=dict)
    _turn: int = 0

    def pick(self, is_live: Callable[[tuple[str, str]], bool]
             ) -> tuple[tuple[str, str], Grant] | None:
        """The member that gets the next message: the next live one in turn, else the next
        one in turn (cost: the group's members)."""
        if not self.members:
            return None
        keys = list(self.members)
        n = len(keys)
        start = self._turn % n
        order = keys[start:] + keys[:start]
        chosen = next((k for k in order if is_live(k)), order[0])
        self._turn = keys.index(chosen) + 1
        return chosen, self.members[chosen]


class SharedGroups:
    """Every shared subscription's group, each entered once in the broker's tree."""

    __slots__ = ("_groups",)

    def __init__(self) -> None:
        self._groups: dict[GroupKey, SharedGroup] = {}

    def join(self, tree: Any, key: tuple[str, str], mounted_filter: str, grant: Grant) -> bool:
        """Add session `key` to the group of a mounted `$share/...` filter (entering the
        group in `tree` when it is new); False: not a shared filter, nothing done."""
        shared = split_shared(mounted_filter)
        if shared is None:
            return False
        gkey = GroupKey("$share", *shared)
        group = self._groups.get(gkey)
        if group is None:
            group = self._groups[gkey] = SharedGroup()
            tree.add(gkey.mounted_filter, gkey, QoS.EXACTLY_ONCE)  # members cap their QoS
        group.members[key] = grant
        return True

    def leave(self, tree: Any, key: tuple[str, str], mounted_filter: str) -> bool:
        """Remove `key` from its group (the last member removes the group from `tree`);
        False: not a shared filter."""
        shared = split_shared(mounted_filter)
        if shared is None:
            return False
        gkey = GroupKey("$share", *shared)
        group = self._groups.get(gkey)
        if group is not None:
            group.members.pop(key, None)
            if not group.members:
                del self._groups[gkey]
                tree.remove(gkey.mounted_filter, gkey)
        return True

    def pick(self, gkey: GroupKey, is_live: Callable[[tuple[str, str]], bool]
             ) -> tuple[tuple[str, str], Grant] | None:
        """The member of `gkey`'s group that gets the next message (`SharedGroup.pick`)."""
        return self._groups[gkey].pick(is_live)
