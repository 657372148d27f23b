"""What MQTT 5 adds to a routed message and to a subscription, as the broker keeps them.

Theory of operation (MQTT 5.0 sections 3.3.2.3 and 3.8.3.1). The broker routes `Message`
values whose topics are mounted by the jail; MQTT 5 adds, per message, the properties the
server must pass through unchanged (payload format indicator, content type, response topic,
correlation data, user properties: `Message.props`, a core `Properties` holding those
only) and an expiry (`Message.expires_at`); and per subscription, its options and
identifier (`Grant`).

- A `Grant` is stored as one integer (`code`): the subscription options byte (QoS in bits
  0-1, no local bit 2, retain as published bit 3, retain handling bits 4-5) plus the
  subscription identifier times 256. A 3.1.1 grant is its QoS: the same column, the same
  number.
- A session holds its non-default grants only (`SessionState.options`, sparse): a 3.1.1
  session, or a v5 one subscribing without options, costs nothing extra when a message is
  routed. A session with options has the subscriptions that match a topic re-examined
  (`deliver`), bounded by `max_subscriptions_per_session`.
- The response topic is mounted like any topic (the jail): it can only name a topic inside
  the publisher's own network, and it is unmounted for the subscriber, who lives in the same
  jail.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from .mqtt.packets import QoS
from .mqtt.properties import (
    NO_PROPERTIES,
    Properties,
    decode_properties,
    encode_properties,
    make_properties,
)

if TYPE_CHECKING:
    from .broker_state import Message
    from .jail import Jail

__all__ = ["Grant", "deliver", "inbound_props", "outbound_props", "plain_grant",
           "props_from_wire", "props_to_wire"]

SHARE_PREFIX = "$share/"


@dataclass(frozen=True, slots=True)
class Grant:
    """One subscription as granted: QoS and the MQTT 5 options (section 3.8.3.1)."""

    qos: QoS
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    identifier: int = 0

    @property
    def code(self) -> int:
        """The stored integer: options byte + identifier * 256."""
        return (int(self.qos) | self.no_local << 2 | self.retain_as_published << 3
                | self.retain_handling << 4 | self.identifier << 8)

    @classmethod
    def from_code(cls, code: int) -> Grant:
        return cls(QoS(code & 3), bool(code & 4), bool(code & 8), (code >> 4) & 3, code >> 8)

    @property
    def plain(self) -> bool:
        """Nothing but the QoS (a 3.1.1 grant): kept in `SessionState.subscriptions` only."""
        return not (self.no_local or self.retain_as_published or self.retain_handling
                    or self.identifier)


def plain_grant(qos: QoS | int) -> Grant:
    return Grant(QoS(qos))


def deliver(subscriptions: Mapping[str, QoS], options: Mapping[str, Grant], topic: str,
            own: bool) -> tuple[QoS, bool, tuple[int, ...]] | None:
    """How a session with MQTT 5 options gets a message on mounted `topic`: (QoS, retain as
    published, subscription identifiers), or None when every matching subscription is
    `no_local` and the message is the session's own (`own`, MQTT-3.8.3-3). The QoS is the
    highest granted among the matching subscriptions (MQTT-3.3.4-2); identifiers of all of
    them go with the one copy (MQTT-3.3.4-3). Shared subscriptions are not looked at here
    (their group picks a member). Cost: the session's subscriptions."""
    qos: QoS | None = None
    keep_retain = False
    ids: list[int] = []
    levels: list[str] | None = None
    for topic_filter, granted in subscriptions.items():
        if topic_filter != topic:
            # A filter without wildcards matches only itself; a shared one is its group's.
            if ("+" not in topic_filter and "#" not in topic_filter) or \
                    topic_filter.startswith(SHARE_PREFIX):
                continue
            if levels is None:
                levels = topic.split("/")
            if not _matches(_split(topic_filter), levels):
                continue
        grant = options.get(topic_filter)
        if grant is not None:
            if own and grant.no_local:
                continue
            keep_retain |= grant.retain_as_published
            if grant.identifier:
                ids.append(grant.identifier)
        if qos is None or granted > qos:
            qos = granted
    if qos is None:
        return None
    return qos, keep_retain, tuple(ids)


@lru_cache(maxsize=4096)
def _split(topic_filter: str) -> tuple[str, ...]:
    return tuple(topic_filter.split("/"))


def _matches(pattern: tuple[str, ...], levels: list[str]) -> bool:
    """`topic_matches` on split levels (mounted topics: never a `$` first level)."""
    for i, want in enumerate(pattern):
        if want == "#":
            return True
        if i >= len(levels) or (want != "+" and want != levels[i]):
            return False
    return len(pattern) == len(levels)


def inbound_props(props: Properties, jail: Jail) -> Properties | None:
    """The pass-through properties of a device's PUBLISH (or will), the response topic
    mounted; None when it has none.

    Raises:
        JailViolation: the response topic is a `$`-topic (answered 0x87 not authorized).
    """
    if not props:
        return None
    d = props.__dict__
    response = d.get("response_topic")
    passed = make_properties(
        payload_format_indicator=d.get("payload_format_indicator"),
        content_type=d.get("content_type"),
        response_topic=None if response is None else jail.mount_topic(response),
        correlation_data=d.get("correlation_data"),
        user_properties=d.get("user_properties", ()))
    return passed if passed else None


def outbound_props(message: Message, jail: Jail, now: float) -> Properties:
    """The PUBLISH properties of `message` for an MQTT 5 subscriber in `jail`: what was
    passed through (the response topic unmounted), the remaining expiry interval
    (MQTT-3.3.2-6) and the copy's subscription identifiers."""
    props = message.props
    if props is None and message.expires_at is None and not message.sub_ids:
        return NO_PROPERTIES
    d = props.__dict__ if props is not None else {}
    response = d.get("response_topic")
    remaining = None
    if message.expires_at is not None:
        remaining = max(1, int(message.expires_at - now + 0.999))
    return make_properties(
        payload_format_indicator=d.get("payload_format_indicator"),
        message_expiry_interval=remaining,
        content_type=d.get("content_type"),
        response_topic=None if response is None else jail.unmount(response),
        correlation_data=d.get("correlation_data"),
        user_properties=d.get("user_properties", ()),
        subscription_identifiers=message.sub_ids)


def props_to_wire(props: Properties | None, jail: Jail) -> bytes:
    """`Message.props` as stored: a PUBLISH property list (length prefix included), the
    response topic device-relative like every stored topic."""
    if props is None:
        return b""
    response = props.__dict__.get("response_topic")
    if response is not None:
        props = make_properties(**{**props.__dict__, "response_topic": jail.unmount(response)})
    out = bytearray()
    encode_properties(props, "PUBLISH", out)
    return bytes(out)


def props_from_wire(data: bytes, jail: Jail) -> Properties | None:
    """`props_to_wire` undone (b"": None)."""
    if not data:
        return None
    props, _ = decode_properties(data, 0, "PUBLISH")
    return inbound_props(props, jail)
