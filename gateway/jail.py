"""The jail: every topic a device names is mounted under its network UUID.

A device of network N publishing `report/t` writes `N/report/t`; its filter `#` becomes `N/#`
and so can only match topics inside `N/`. Because the prefix is added by the gateway and a
UUID holds no `/`, `+` or `#`, no topic name or filter a device can write mounts outside its
own subtree; a device naming another network's UUID only reaches `N/<other-uuid>/...`.
`$`-topics (`$SYS/...`) are server topics and are refused outright (MQTT 3.1.1 section 4.7.2).
Syntax (wildcard placement, UTF-8, NUL) is checked by `gateway.mqtt.topics`; this module only
adds the namespace rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import JailViolation

ERRORS_TOPIC = "errors"
"""The in-jail topic where the gateway tells a device why a publish was not taken."""
SHARE = "$share/"
"""An MQTT 5 shared subscription's prefix (section 4.8.2): the one `$` a filter may start with."""
RENEW, RENEWED, RENEW_REJECTED = "cert/renew", "cert/renewed", "cert/rejected"
"""The in-jail topics of certificate renewal (`gateway.provisioning`): a CSR published to
RENEW goes to the signer, never to subscribers; the answer comes on RENEWED or REJECTED."""


@dataclass(frozen=True, slots=True)
class Jail:
    """The topic namespace of one network."""

    network: str
    # Built once: every publish in and every delivery out is mounted or unmounted with it.
    prefix: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", self.network + "/")

    def mount_topic(self, topic: str) -> str:
        """Map a device's topic name to the broker-wide name.

        Raises:
            JailViolation: a `$`-topic, or an empty topic.
        """
        self._check(topic)
        return self.prefix + topic

    def mount_filter(self, topic_filter: str, *, shared: bool = False) -> str:
        """Map a device's topic filter to the broker-wide filter (same rules as names).

        An MQTT 5 shared subscription `$share/{group}/{filter}` keeps its group and has its
        filter mounted: `$share/{group}/{network}/{filter}` (`gateway.shared`), so a group
        never reaches across jails. Only with `shared` (an MQTT 5 session): for 3.1.1 it is
        a `$`-filter like any other, refused."""
        if shared and topic_filter.startswith(SHARE):
            group, _, rest = topic_filter[len(SHARE):].partition("/")
            if not group or not rest:
                raise JailViolation(topic_filter, "a shared subscription names a group and a "
                                    "filter")
            self._check(rest)
            return f"{SHARE}{group}/{self.prefix}{rest}"
        self._check(topic_filter)
        return self.prefix + topic_filter

    def unmount_filter(self, mounted: str) -> str:
        """The device's filter of a mounted one (`mount_filter` undone).

        Raises:
            JailViolation: the filter is not inside this jail.
        """
        if mounted.startswith(SHARE):
            group, _, rest = mounted[len(SHARE):].partition("/")
            return f"{SHARE}{group}/{self.unmount(rest)}"
        return self.unmount(mounted)

    def unmount(self, mounted: str) -> str:
        """Map a broker-wide topic back to the name the device sees.

        Raises:
            JailViolation: the topic is not inside this jail (a routing bug: never deliver it).
        """
        if not mounted.startswith(self.prefix):
            raise JailViolation(mounted, "topic outside the jail")
        return mounted[len(self.prefix):]

    def contains(self, mounted: str) -> bool:
        return mounted.startswith(self.prefix)

    @staticmethod
    def _check(topic: str) -> None:
        if not topic:
            raise JailViolation(topic, "empty topic")
        if topic.startswith("$"):
            raise JailViolation(topic, "$-topics are reserved to the server")
