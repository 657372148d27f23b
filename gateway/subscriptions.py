"""One SUBSCRIBE's filters examined once, within the per-packet limit (sans-IO).

Theory of operation (MQTT 3.1.1 section 3.8). A SUBSCRIBE may hold tens of thousands of
filters; the work done for it must be bounded by configuration, not by the packet:

- Only the first `max_filters_per_subscribe` filters are examined; the ones past it get
  SUBACK 0x80 (MQTT-3.9.3-2 allows refusing any filter) without any per-filter work.
- A filter named twice is handled once with the QoS of its last occurrence: the same end
  state as replacing the subscription in packet order (MQTT-3.8.4-3). The SUBACK still holds
  one code per filter, in order (MQTT-3.8.4-5): each occurrence reports the QoS it asked for,
  as if the subscriptions were replaced one after the other (a code never exceeds the QoS
  its occurrence asked, MQTT-3.9.3).
- The jail refuses `$`-filters (section 4.7.2); the refusals of one packet make one log
  line (`refusal_summary`), with a count and the first few filters, never one per filter.
- MQTT 5 (section 3.8.3.1): each filter carries options (no local, retain as published,
  retain handling) and the packet at most one subscription identifier; they make the
  filter's `Grant`. `$share/{group}/{filter}` is mounted as a shared subscription (the
  jail). A refusal's reason code says why: 0x87 not authorized (the jail), 0x97 quota
  exceeded (a limit). Retain handling 1 sends the retained messages only to a filter new
  to the session, 2 never (MQTT-3.3.1-10, -11 of 5.0).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .broker import Broker
from .broker_state import Message, SessionState
from .delivery import Grant
from .errors import JailViolation
from .jail import Jail
from .mqtt.packets import SUBACK_FAILURE, QoS, SubscriptionOptions

NOT_AUTHORIZED, QUOTA_EXCEEDED = 0x87, 0x97
"""MQTT 5 SUBACK reasons of a refused filter: the jail's, a limit's."""

if TYPE_CHECKING:
    from .metrics import MqttMetrics

__all__ = ["LOGGED_FILTERS", "SubscribeRequest", "examine"]

LOGGED_FILTERS = 5
"""Filters a SUBSCRIBE log line names (the rest are counted)."""
LOGGED_FILTER_CHARS = 128
"""Characters of each named filter kept in a log line."""


@dataclass(slots=True)
class SubscribeRequest:
    """What one SUBSCRIBE asks for, once examined."""

    filters: Sequence[str]
    """The device's filters, in packet order (duplicates included)."""
    asked: Sequence[int] = ()
    """The QoS each of them asked for."""
    wanted: dict[str, tuple[str, QoS]] = field(default_factory=dict)
    """Device filter -> (mounted filter, the QoS of its last occurrence), first-seen order."""
    refused: dict[str, str] = field(default_factory=dict)
    """Device filter -> why it is refused (jail, per-session limit)."""
    unexamined: int = 0
    """Filters past `max_filters_per_subscribe`."""
    duplicates: int = 0
    """Occurrences collapsed into an earlier one of the same filter."""
    granted: dict[str, int] = field(default_factory=dict)
    """Device filter -> SUBACK code, filled by the caller as it subscribes."""
    grants: dict[str, Grant] = field(default_factory=dict)
    """MQTT 5: device filter -> its options and identifier (absent: a plain grant)."""

    def refuse(self, topic_filter: str, why: str) -> None:
        self.refused[topic_filter] = why
        self.granted[topic_filter] = SUBACK_FAILURE

    def apply(self, broker: Broker, state: SessionState
              ) -> list[tuple[str, Iterator[Message], QoS]]:
        """Subscribe `state` to each wanted filter (refusing the ones past the session's
        limit); return (mounted filter, its lazy retained stream, QoS) per granted one
        whose retain handling asks for its retained messages."""
        streams = []
        for topic_filter, (mounted, qos) in self.wanted.items():
            grant = self.grants.get(topic_filter)
            existed = mounted in state.subscriptions
            if not broker.subscribe(state, mounted, qos, grant):
                self.refuse(topic_filter, "max_subscriptions_per_session")
                continue
            self.granted[topic_filter] = int(qos)
            handling = 0 if grant is None else grant.retain_handling
            if handling == 0 or (handling == 1 and not existed):
                ids = (grant.identifier,) if grant is not None and grant.identifier else ()
                streams.append((mounted, broker.retained_for(mounted, qos, ids), qos))
        return streams

    def log(self, log: Any, ids: dict[str, Any], serial: int) -> None:
        """Write this packet's lines: one `subscribe_denied` for all its refusals (however
        many filters), then `subscribed`; `ids` name the network and the client."""
        refused = self.refusal_summary()
        if refused is not None:
            log.emit("subscribe_denied", **ids, serial=serial, **refused)
        log.emit("subscribed", **ids, **self.logged())

    def count(self, metrics: MqttMetrics) -> None:
        """Add this packet's refusals and collapsed duplicates to the gateway's metrics."""
        for why in self.refused.values():
            if why == "max_subscriptions_per_session":
                metrics.subscribes_refused.inc(why)
            else:
                metrics.subscribes_denied.inc()
        if self.unexamined:
            metrics.subscribes_refused.inc("max_filters_per_subscribe", self.unexamined)
        metrics.subscribe_duplicates.inc(self.duplicates)

    def codes(self, v5: bool = False) -> list[int]:
        """One SUBACK return code per filter of the packet, in order (MQTT-3.8.4-5); `v5`:
        a refusal says why (0x87 the jail, 0x97 a limit) instead of 0x80."""
        examined = len(self.filters) - self.unexamined
        get = self.granted.get
        refused = self.refused

        def failure(f: str) -> int:
            if not v5:
                return SUBACK_FAILURE
            return QUOTA_EXCEEDED if refused.get(f, "max_").startswith("max_") else NOT_AUTHORIZED

        return ([q if get(f, SUBACK_FAILURE) != SUBACK_FAILURE else failure(f)
                 for f, q in zip(self.filters[:examined], self.asked, strict=False)]
                + [QUOTA_EXCEEDED if v5 else SUBACK_FAILURE] * self.unexamined)

    def refusal_summary(self) -> dict[str, Any] | None:
        """The fields of the one log line for this packet's refusals (None: no refusal)."""
        count = len(self.refused) + self.unexamined
        if not count:
            return None
        reasons = Counter(self.refused.values())
        if self.unexamined:
            reasons["max_filters_per_subscribe"] += self.unexamined
        named = list(self.refused)[:LOGGED_FILTERS]
        if len(named) < LOGGED_FILTERS and self.unexamined:
            examined = len(self.filters) - self.unexamined
            named += self.filters[examined:examined + LOGGED_FILTERS - len(named)]
        return {"refused": count, "reasons": dict(reasons), "filters": clip(named)}

    def logged(self) -> dict[str, Any]:
        """The filter fields of the `subscribed` line, capped at LOGGED_FILTERS filters."""
        codes = self.codes()
        return {"filter_count": len(self.filters),
                "filters": clip(self.filters[:LOGGED_FILTERS]),
                "granted": codes[:LOGGED_FILTERS]}


def clip(filters: Sequence[str]) -> list[str]:
    return [f if len(f) <= LOGGED_FILTER_CHARS else f[:LOGGED_FILTER_CHARS] + "..."
            for f in filters]


def examine(subscriptions: Sequence[tuple[str, int]], jail: Jail,
            max_filters: int, options: Sequence[SubscriptionOptions] = (),
            identifier: int = 0, *, v5: bool = False) -> SubscribeRequest:
    """Examine the first `max_filters` (filter, QoS) pairs of a SUBSCRIBE: collapse
    duplicates (last QoS wins), mount each distinct filter once or note why the jail
    refuses it. MQTT 5 (`v5`): `options` per pair (empty: all default) and the packet's
    subscription `identifier` (0: none) make each filter's grant, and `$share/` filters are
    shared subscriptions. Cost: O(min(len(subscriptions), max_filters)) filters examined,
    plus one list of the packet's filter names (already decoded)."""
    request = SubscribeRequest([f for f, _ in subscriptions], [int(q) for _, q in subscriptions])
    request.unexamined = max(0, len(subscriptions) - max_filters)
    for index, (topic_filter, qos) in enumerate(subscriptions[:max_filters]):
        if v5:
            opts = options[index] if options else None
            grant = Grant(QoS(qos), opts.no_local, opts.retain_as_published,
                          int(opts.retain_handling), identifier) if opts else Grant(
                QoS(qos), identifier=identifier)
            if grant.plain:
                request.grants.pop(topic_filter, None)
            else:
                request.grants[topic_filter] = grant
        if topic_filter in request.refused:
            request.duplicates += 1
            continue
        known = request.wanted.get(topic_filter)
        if known is not None:
            request.duplicates += 1
            request.wanted[topic_filter] = (known[0], QoS(qos))
            continue
        try:
            mounted = jail.mount_filter(topic_filter, shared=v5)
        except JailViolation as exc:
            request.refuse(topic_filter, exc.why)
            continue
        request.wanted[topic_filter] = (mounted, QoS(qos))
    return request
