"""The gateway's metrics: one typed object, built once, counted by name.

`GatewayMetrics` is a frozen record of frozen records, one per concern (`mqtt`,
`provisioning`, `console`, `http`, `latency`); each field is one metric family with its
exposed name and help. `run_gateway` builds it once and hands each part to whoever counts
(`Gateway(metrics=...)`, `HttpStatistics(metrics=metrics.http)`, the console's
`metrics.console`); nothing replaces a field later. At scrape time gateway/http/metrics.py
walks it (`families(record)`) into `prometheus_client` metric families, so the exposition is
the library's while an increment stays one attribute step:

    metrics.mqtt.wills_published.inc()              # Count
    metrics.mqtt.messages_in[qos].inc()             # CountBy: the child for one label
    metrics.mqtt.handshakes_refused.inc(cause)      # CountBy: a RefusalCause
    metrics.mqtt.disconnects.inc(reason)            # a DisconnectReason
    metrics.mqtt.throttled.inc(ThrottleLimit.MAX_CONNECTIONS)
    metrics.http.responses.inc(status // 100)       # 1..5, exposed as code="2xx"
    metrics.latency.publish_ack.observe(seconds, weight)    # Timing (a latency.Histogram)
    metrics.http.request_seconds[route].observe(seconds)    # TimingBy

A labelled family (`CountBy`, `TimingBy`) takes its label from a closed set given when it is
built (an enum, or a fixed tuple): every label is exposed from the start (at 0, so a
dashboard sees zeros, not gaps), the series are bounded, and a label outside the set raises
`KeyError` rather than opening a new series. Labels that come from outside the process (the
signer's refusal words) are folded into the set first (`sign_outcome`).

Why not `prometheus_client.Counter` at the call sites: its `inc()` takes a lock and checks
its argument, several times the cost of `Count.inc()` (one slot add), and `messages_in` is
counted per PUBLISH. Everything here runs on the trio thread (the console's worker threads
count only after returning to it), so no lock is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any, Generic, TypeVar

from .latency import BUCKETS, Histogram
from .mqtt.packets import QoS
from .reasons import DisconnectReason, RefusalCause, ThrottleLimit

K = TypeVar("K")


class Count:
    """A monotonic counter: `inc(n=1)`; `value` is read at scrape time."""

    __slots__ = ("name", "help", "value")
    kind = "counter"

    def __init__(self, name: str, help: str) -> None:
        self.name, self.help, self.value = name, help, 0

    def inc(self, n: int = 1) -> None:
        self.value += n


class Gauge:
    """A value that goes up and down: `inc()`, `dec()`, `set(v)`."""

    __slots__ = ("name", "help", "value")
    kind = "gauge"

    def __init__(self, name: str, help: str) -> None:
        self.name, self.help, self.value = name, help, 0

    def inc(self, n: int = 1) -> None:
        self.value += n

    def dec(self, n: int = 1) -> None:
        self.value -= n

    def set(self, value: float) -> None:
        self.value = value


class CountBy(Generic[K]):
    """Counters by one label from a closed set: `inc(key)`, or `[key].inc()` on a hot path
    (the child `Count` can be held). `text(key)` is the exposed label value (default str)."""

    __slots__ = ("name", "help", "label", "children", "text")
    kind = "counter"

    def __init__(self, name: str, help: str, label: str, keys: Iterable[K],
                 text: Callable[[K], str] = str) -> None:
        self.name, self.help, self.label, self.text = name, help, label, text
        self.children: dict[K, Count] = {key: Count(name, help) for key in keys}

    def __getitem__(self, key: K) -> Count:
        return self.children[key]

    def inc(self, key: K, n: int = 1) -> None:
        """Raises KeyError for a key outside the family's set."""
        self.children[key].value += n

    def values(self) -> dict[str, int]:
        return {self.text(key): c.value for key, c in self.children.items()}


class Timing(Histogram):
    """A latency histogram with its exposed name: `observe(seconds, weight=1)`."""

    __slots__ = ("name", "help")
    kind = "histogram"

    def __init__(self, name: str, help: str,
                 bounds: tuple[float, ...] = BUCKETS) -> None:
        super().__init__(bounds)
        self.name, self.help = name, help


class TimingBy(Generic[K]):
    """Latency histograms by one label from a closed set: `[key].observe(seconds)`."""

    __slots__ = ("name", "help", "label", "children")
    kind = "histogram"

    def __init__(self, name: str, help: str, label: str,
                 keys: Iterable[K]) -> None:
        self.name, self.help, self.label = name, help, label
        self.children: dict[K, Timing] = {key: Timing(name, help) for key in keys}

    def __getitem__(self, key: K) -> Timing:
        return self.children[key]


Metric = Count | Gauge | CountBy[Any] | Timing | TimingBy[Any]


# -- the closed label sets --------------------------------------------------------------

PENDING_LIMITS = ("max_pending_per_source", "max_pending")
HTTP_RATE_LIMITS = ("http_connection_rate_per_source", "http_connection_rate")
"""The pending pool's caps (`limits.PendingPool.admit` names the one that evicted)."""

SUBSCRIBE_LIMITS = ("max_filters_per_subscribe", "max_subscriptions_per_session")

QOS_LEVELS = tuple(QoS)
"""Keyed by the `QoS` members messages carry (an int 0-2 finds the same series)."""

STATUS_CLASSES = (1, 2, 3, 4, 5)
"""HTTP status // 100; exposed as `code="2xx"`."""

ROUTE_CLASSES = ("api", "console", "health", "metrics", "other")
"""What an HTTPS request's latency is labelled with (never the raw path: unbounded)."""

SIGN_OUTCOMES = (
    "accepted",
    # the gateway's own refusals (gateway.provisioning)
    "no_signer", "csr_bad", "busy", "signer_timeout", "signer_unavailable",
    # the signer's refusal words (ca.signer.policy, ca.signer.est)
    "claim_unknown", "claim_revoked", "claim_expired", "claim_exhausted", "not_a_device",
    "device_revoked", "device_expired", "csr_forged", "csr_profile",
    "rate_claim", "rate_network", "bad_encoding", "bad_header",
    "other",  # a word this release does not know (a newer signer, an HTTP status)
)


def sign_outcome(reason: str) -> str:
    """The `outcome` label of a signer answer: its reason word if known, else "other"."""
    return reason if reason in _SIGN_OUTCOMES else "other"


_SIGN_OUTCOMES = frozenset(SIGN_OUTCOMES)


def _status_class(key: int) -> str:
    return f"{key}xx"


# -- the records ------------------------------------------------------------------------

def _count(name: str, help: str) -> Any:
    return field(default_factory=lambda: Count(name, help))


def _count_by(name: str, help: str, label: str, keys: Iterable[Any],
              text: Callable[[Any], str] = str) -> Any:
    keys = tuple(keys)
    return field(default_factory=lambda: CountBy(name, help, label, keys, text))


@dataclass(frozen=True, slots=True)
class MqttMetrics:
    """The MQTT listener: admission, sessions, messages, refusals, the log budget."""

    connections_accepted: Count = _count("connections_accepted_total",
                                         "TCP connections accepted")
    handshakes_accepted: Count = _count("handshakes_accepted_total",
                                        "device admissions accepted")
    handshakes_refused: CountBy[RefusalCause] = _count_by(
        "handshakes_refused_total", "MQTT TLS handshakes or admissions refused, by reason",
        "reason", RefusalCause)
    throttled: CountBy[ThrottleLimit] = _count_by(
        "throttled_total", "connections or sessions refused by a limit", "limit",
        ThrottleLimit)
    pending_evicted: CountBy[str] = _count_by(
        "pending_evicted_total", "unauthenticated connections closed to admit a newer one, "
        "by the cap that was full", "limit", PENDING_LIMITS)
    disconnects: CountBy[DisconnectReason] = _count_by(
        "disconnects_total", "MQTT connections closed, by reason", "reason", DisconnectReason)
    messages_in: CountBy[QoS] = _count_by("messages_in_total",
                                          "PUBLISH packets received, by QoS", "qos", QOS_LEVELS)
    messages_out: CountBy[QoS] = _count_by("messages_out_total",
                                           "PUBLISH packets sent, by QoS", "qos", QOS_LEVELS)
    retained_out: Count = _count("retained_out_total",
                                 "retained messages sent to new subscriptions")
    wills_published: Count = _count("wills_published_total", "will messages published")
    publishes_denied: Count = _count("publishes_denied_total", "PUBLISH refused by the jail")
    subscribes_denied: Count = _count("subscribes_denied_total",
                                      "SUBSCRIBE filters refused by the jail")
    subscribes_refused: CountBy[str] = _count_by(
        "subscribes_refused_total", "SUBSCRIBE filters refused by a limit", "limit",
        SUBSCRIBE_LIMITS)
    subscribe_duplicates: Count = _count("subscribe_duplicates_total",
                                         "filters repeated in one SUBSCRIBE, collapsed")
    protocol_errors: Count = _count("protocol_errors_total", "MQTT protocol errors by clients")
    internal_errors: Count = _count("internal_errors_total", "unexpected errors (each logged)")
    throttle_pauses: Count = _count("throttle_pauses_total", "reads paused by a rate limit")
    readings_throttled: Count = _count("readings_throttled_total",
                                       "reads paused by max_readings_per_second_per_network")
    ingest_failures: Count = _count("ingest_failures_total",
                                    "publishes not stored (the connection closed unacknowledged)")
    queue_restore_failed: Count = _count("queue_restore_failed_total",
                                         "stored session queues that could not be read")
    status_failures: Count = _count("status_failures_total",
                                    "connection status writes that failed (logged)")
    revocations_applied: Count = _count("revocations_applied_total",
                                        "live sessions closed by revocation")
    controls_published: Count = _count("controls_published_total",
                                       "control values published by the HTTP API")
    crls_ignored: Count = _count("crls_ignored_total", "CRLs in crl.pem not applied")
    crls_rejected: Count = _count("crls_rejected_total",
                                  "crl.pem loads refused (the previous revoked set kept)")
    log_lines_suppressed: Count = _count(
        "log_lines_suppressed_total",
        "connection log lines over log_lines_per_connection, not written")
    log_summaries: Count = _count("log_summaries_total", "log_suppressed summary lines written")
    # MQTT 5 (docs/operations.md "MQTT 5 limits")
    messages_expired: Count = _count("messages_expired_total",
                                     "queued messages past their MQTT 5 expiry, never sent")
    sessions_expired: Count = _count("sessions_expired_total",
                                     "MQTT 5 sessions dropped at the end of their expiry")
    wills_delayed: Count = _count("wills_delayed_total",
                                  "MQTT 5 wills held for their delay interval")
    publishes_refused: Count = _count("publishes_refused_total",
                                      "MQTT 5 PUBLISHes acknowledged with a refusal reason")
    session_expiry_capped: Count = _count("session_expiry_capped_total",
                                          "MQTT 5 session expiry intervals capped")


@dataclass(frozen=True, slots=True)
class ProvisioningMetrics:
    """Enrolment by claim and renewal, relayed to the signer."""

    provision_requests: CountBy[str] = _count_by(
        "provision_requests_total",
        "claim provisioning requests relayed to the signer, by outcome (accepted or reason)",
        "outcome", SIGN_OUTCOMES)
    renewal_requests: CountBy[str] = _count_by(
        "renewal_requests_total",
        "cert/renew requests relayed to the signer, by outcome (accepted or reason)",
        "outcome", SIGN_OUTCOMES)
    renewals_forgotten: Count = _count(
        "renewals_forgotten_total",
        "renewed certificates forgotten before first use (renewals_awaiting_use): the old "
        "one is revoked at the end of its grace instead")
    first_use: CountBy[str] = _count_by(
        "cert_first_use_total",
        "renewed certificates seen in use, told to the signer, by outcome (superseded counts "
        "the old certificates it revoked)", "outcome", ("superseded", "refused", "failed"))


@dataclass(frozen=True, slots=True)
class ConsoleMetrics:
    """The web console and the owner codes it learns from admissions."""

    owner_codes_recorded: Count = _count("owner_codes_recorded_total",
                                         "networks' owner-code hashes written")
    owner_codes_dropped: Count = _count("owner_codes_dropped_total",
                                        "owner-code hashes not queued (queue full)")
    logins_locked: Count = _count("console_logins_locked_total",
                                  "console logins refused by the failed-login limit")
    claims_locked: Count = _count("console_claims_locked_total",
                                  "network claims refused by the failed-claim limit")
    signups_locked: Count = _count("console_signups_locked_total",
                                   "sign-ups refused by console_signups_per_address")
    signups: Count = _count("console_signups_total", "accounts created by sign-up")
    streams_refused: Count = _count("console_streams_refused_total",
                                    "live-update streams refused by their limit")
    revocations: Count = _count("console_revocations_total",
                                "revocations asked of the signer from the console")
    revocations_failed: Count = _count("console_revocations_failed_total",
                                       "console revocations the signer refused or missed")
    activity_networks_dropped: Count = _count(
        "activity_networks_dropped_total",
        "networks dropped from the activity figures (console_activity_networks)")


@dataclass(frozen=True, slots=True)
class HttpMetrics:
    """The HTTPS API and console listener."""

    audit_failures: Count = _count("audit_failures_total",
                                   "audit-trail entries that could not be written")
    connections: Count = _count("http_connections_total", "HTTPS connections accepted")
    connections_open: Gauge = field(default_factory=lambda: Gauge(
        "http_connections_open", "HTTPS connections open now"))
    connections_refused: Count = _count(
        "http_connections_refused_total", "authenticated connections refused (max_connections)")
    handshakes_refused: Count = _count("http_handshakes_refused_total",
                                       "HTTPS TLS handshakes refused")
    throttled: CountBy[str] = _count_by(
        "http_throttled_total", "HTTPS connections closed at accept by a rate limit, by limit",
        "limit", HTTP_RATE_LIMITS)
    pending_evicted: CountBy[str] = _count_by(
        "http_pending_evicted_total", "unauthenticated HTTPS connections closed to admit a "
        "newer one, by the cap that was full", "limit", PENDING_LIMITS)
    requests: Count = _count("http_requests_total", "HTTP API requests")
    bad_requests: Count = _count("http_bad_requests_total", "unusable HTTP requests")
    internal_errors: Count = _count("http_internal_errors_total",
                                    "HTTP API internal errors (each logged)")
    responses: CountBy[int] = _count_by(
        "http_responses_total", "HTTP API responses, by status class", "code", STATUS_CLASSES,
        _status_class)
    request_seconds: TimingBy[str] = field(default_factory=lambda: TimingBy(
        "http_request_seconds", "HTTPS request read to response sent, by route class", "route",
        ROUTE_CLASSES))


@dataclass(frozen=True, slots=True)
class LatencyMetrics:
    """The gateway's latency histograms (the store's commit latency is the writer's)."""

    handshake: Timing = field(default_factory=lambda: Timing(
        "handshake_seconds", "MQTT TCP accept to an admitted device (TLS handshake included)"))
    publish_ack: Timing = field(default_factory=lambda: Timing(
        "publish_ack_seconds",
        "QoS 1/2 PUBLISH read to its acknowledgement ready (once stored)"))


@dataclass(frozen=True, slots=True)
class ClusterMetrics:
    """The cluster bus (gateway.cluster): NOTIFYs, relayed messages, resyncs, lag."""

    notifies_sent: Count = _count("cluster_notifies_sent_total", "NOTIFYs sent on the bus")
    notifies_received: Count = _count("cluster_notifies_received_total",
                                      "NOTIFYs received from the bus")
    large_bodies: Count = _count("cluster_large_bodies_total",
                                 "bus payloads sent through a table row (over 8000 bytes)")
    reconnects: Count = _count("cluster_bus_reconnects_total",
                               "bus connections lost and opened again")
    resyncs: Count = _count("cluster_resyncs_total",
                            "state re-read after the bus (re)connected")
    relay_sent: Count = _count("cluster_relay_sent_total",
                               "messages relayed to other nodes")
    relay_received: Count = _count("cluster_relay_received_total",
                                   "messages relayed from other nodes, delivered locally")
    relay_bytes: Count = _count("cluster_relay_bytes_total",
                                "payload bytes relayed to other nodes")
    relay_dropped: Count = _count("cluster_relay_dropped_total",
                                  "bus sends and registry writes dropped: 10 000 were "
                                  "waiting (PostgreSQL slow or unreachable)")
    relay_gaps: Count = _count("cluster_relay_gaps_total",
                               "relayed messages missed (a gap in an origin's sequence)")
    sessions_refused: Count = _count(
        "cluster_sessions_refused_total",
        "CONNECTs refused: the network holds max_sessions_per_network on all nodes")
    claims_unavailable: Count = _count(
        "cluster_claims_unavailable_total",
        "CONNECTs refused: the session registry could not be reached within 5 s")
    takeovers: Count = _count("cluster_takeovers_total",
                              "sessions handed over to another node")
    reaped: Count = _count("cluster_reaped_sessions_total",
                           "sessions of dead nodes taken over (wills published)")
    lag: Timing = field(default_factory=lambda: Timing(
        "cluster_relay_lag_seconds", "a relayed message's publish on its node to its "
        "delivery here (wall clocks of two nodes)"))


@dataclass(frozen=True, slots=True)
class StorageMetrics:
    """The store's housekeeping (gateway.maintenance)."""

    history_expired: Count = _count(
        "history_expired_total", "readings and commands deleted past history_retention_days")


@dataclass(frozen=True, slots=True)
class GatewayMetrics:
    """Every metric of one gateway process (see the module docstring for the API)."""

    mqtt: MqttMetrics = field(default_factory=MqttMetrics)
    provisioning: ProvisioningMetrics = field(default_factory=ProvisioningMetrics)
    console: ConsoleMetrics = field(default_factory=ConsoleMetrics)
    http: HttpMetrics = field(default_factory=HttpMetrics)
    latency: LatencyMetrics = field(default_factory=LatencyMetrics)
    cluster: ClusterMetrics = field(default_factory=ClusterMetrics)
    storage: StorageMetrics = field(default_factory=StorageMetrics)


def families(record: Any) -> Iterator[Metric]:
    """The metric families of one record, in field order."""
    for f in fields(record):
        yield getattr(record, f.name)


def counts(*records: Any) -> dict[str, Any]:
    """The counters of `records` that moved, for the `stopped` log line: name (without
    `_total`) -> value, or -> {label: value} for a labelled family."""
    out: dict[str, Any] = {}
    for record in records:
        for metric in families(record):
            name = metric.name.removesuffix("_total")
            if isinstance(metric, Count) and metric.value:
                out[name] = metric.value
            elif isinstance(metric, CountBy):
                moved = {k: v for k, v in metric.values().items() if v}
                if moved:
                    out[name] = moved
    return out
