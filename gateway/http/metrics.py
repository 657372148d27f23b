"""/metrics: the gateway's figures in Prometheus exposition, through `prometheus_client`.

`gateway_samples(...)` reads the gateway's counters, the broker's, the store's and ingest's
`statistics()` at scrape time into `Sample`s; `render(samples)` exposes them together with
the process (`process_*`), Python runtime (`python_*`) and build (`fleetgate_build_info`)
collectors of `prometheus_client`, so the exposition format and its escaping are the
library's, not ours.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.registry import Collector

from ..latency import Histogram

CONTENT_TYPE = CONTENT_TYPE_LATEST
PREFIX = "fleetgate_"


@dataclass(frozen=True, slots=True)
class Sample:
    name: str  # without the prefix; counters end in _total
    value: float
    labels: tuple[tuple[str, str], ...] = ()
    kind: str = "counter"  # or "gauge", or "histogram" (then `histogram` holds it)
    help: str = ""
    histogram: Histogram | None = None


MetricsSource = Callable[[], Iterable[Sample]]


def _release() -> str:
    try:
        return version("fleetgate")
    except PackageNotFoundError:
        return "unknown"


class _Samples(Collector):
    """Turns one scrape's samples into metric families (one per name)."""

    def __init__(self, samples: Iterable[Sample]) -> None:
        self.samples = samples

    def collect(self) -> Iterator[Any]:
        yield InfoMetricFamily(PREFIX + "build", "the fleetgate release serving",
                               value={"version": _release()})
        families: dict[str, Any] = {}
        for s in self.samples:
            family = families.get(s.name)
            if family is None:
                names = [k for k, _ in s.labels]
                help_ = s.help or s.name.replace("_", " ")
                if s.kind == "counter":
                    family = CounterMetricFamily(PREFIX + s.name.removesuffix("_total"), help_,
                                                 labels=names)
                elif s.kind == "histogram":
                    family = HistogramMetricFamily(PREFIX + s.name, help_, labels=names)
                else:
                    family = GaugeMetricFamily(PREFIX + s.name, help_, labels=names)
                families[s.name] = family
            if s.histogram is not None:
                family.add_metric([v for _, v in s.labels], s.histogram.buckets(),
                                  s.histogram.sum)
            else:
                family.add_metric([v for _, v in s.labels], s.value)
        yield from families.values()


def render(samples: Iterable[Sample]) -> bytes:
    """The exposition of `samples` plus process, Python and build metrics."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR, _Samples(samples)):
        registry.register(collector)
    return generate_latest(registry)


# gateway counter key prefix -> (metric, label name, help)
_LABELLED = (
    ("handshake_refused_", "handshakes_refused_total", "reason",
     "MQTT TLS handshakes or admissions refused, by reason"),
    ("messages_in_qos", "messages_in_total", "qos", "PUBLISH packets received, by QoS"),
    ("messages_out_qos", "messages_out_total", "qos", "PUBLISH packets sent, by QoS"),
    ("disconnect_", "disconnects_total", "reason", "MQTT connections closed, by reason"),
    ("throttled_", "throttled_total", "limit", "connections or sessions refused by a limit"),
    ("provision_", "provision_requests_total", "outcome",
     "claim provisioning requests relayed to the signer, by outcome (accepted or reason)"),
    ("renewal_", "renewal_requests_total", "outcome",
     "cert/renew requests relayed to the signer, by outcome (accepted or reason)"),
)
_PLAIN = {
    "connections_accepted": ("connections_accepted_total", "TCP connections accepted"),
    "handshakes_accepted": ("handshakes_accepted_total", "device admissions accepted"),
    "publish_denied": ("publishes_denied_total", "PUBLISH refused by the jail"),
    "subscribe_denied": ("subscribes_denied_total", "SUBSCRIBE filters refused by the jail"),
    "revocations_applied": ("revocations_applied_total", "live sessions closed by revocation"),
    "protocol_errors": ("protocol_errors_total", "MQTT protocol errors by clients"),
    "wills_published": ("wills_published_total", "will messages published"),
    "internal_errors": ("internal_errors_total", "unexpected errors (each logged)"),
    "throttle_pauses": ("throttle_pauses_total", "reads paused by a rate limit"),
    "readings_throttled": ("readings_throttled_total",
                           "reads paused by max_readings_per_second_per_network"),
    "log_lines_suppressed": ("log_lines_suppressed_total",
                             "connection log lines over log_lines_per_connection, not written"),
    "log_summaries": ("log_summaries_total", "log_suppressed summary lines written"),
}


def counter_samples(counters: dict[str, int]) -> list[Sample]:
    """Samples from the gateway's `counters` (names as gateway/app.py and server.py use)."""
    out: list[Sample] = []
    # Every known counter is shown, at 0 before it first moves: a dashboard sees zeros,
    # not gaps.
    counters = {**dict.fromkeys(_PLAIN, 0), **counters}
    for key, value in sorted(counters.items()):
        for prefix, metric, label, help_ in _LABELLED:
            if key.startswith(prefix):
                out.append(Sample(metric, value, ((label, key[len(prefix):]),), help=help_))
                break
        else:
            metric, help_ = _PLAIN.get(key, (f"{key}_total", key.replace("_", " ")))
            out.append(Sample(metric, value, help=help_))
    # Always expose the QoS families, so a dashboard sees zeros rather than gaps.
    present = {(s.name, s.labels) for s in out}
    for metric in ("messages_in_total", "messages_out_total"):
        for qos in "012":
            if (metric, (("qos", qos),)) not in present:
                out.append(Sample(metric, 0, (("qos", qos),)))
    return out


def gateway_samples(gateway: Any = None, store: Any = None, ingest: Any = None,
                    http: Any = None) -> list[Sample]:
    """Everything /metrics shows; each source is optional (tests run parts alone)."""
    out: list[Sample] = []
    if gateway is not None:
        out.append(Sample("connections", len(gateway.connections), kind="gauge",
                          help="live MQTT connections"))
        out += counter_samples(dict(gateway.counters))
        for key, value in gateway.broker.statistics().items():
            kind = "gauge" if key == "live_sessions" else "counter"
            name = f"broker_{key}" + ("" if kind == "gauge" else "_total")
            out.append(Sample(name, value, kind=kind, help=f"broker {key.replace('_', ' ')}"))
        out.append(Sample("tls_reloads_total", gateway.tls.reloads, help="TLS/CRL reloads"))
        out.append(_histogram("handshake_seconds", gateway.latency.handshake,
                              "MQTT TCP accept to an admitted device (TLS handshake included)"))
        out.append(_histogram("publish_ack_seconds", gateway.latency.publish_ack,
                              "QoS 1/2 PUBLISH read to its acknowledgement ready (once stored)"))
    if ingest is not None:
        st = ingest.statistics()
        out.append(Sample("models_total", st.models_accepted, (("result", "accepted"),),
                          help="model declarations"))
        out.append(Sample("models_total", st.models_rejected, (("result", "rejected"),)))
        out.append(Sample("reports_stored_total", st.reports_stored,
                          help="readings queued for the store"))
        for reason, n in sorted(st.rejected.items()):
            out.append(Sample("reports_rejected_total", n, (("reason", reason),),
                              help="readings refused, by reason"))
    if store is not None:
        st = store.statistics()
        out += [
            Sample("store_queue_depth", st.queued, kind="gauge",
                   help="write operations waiting for the store's writer"),
            Sample("store_queue_capacity", st.queue_capacity, kind="gauge",
                   help="the writer queue's bound"),
            Sample("store_producers_waiting", st.producers_waiting, kind="gauge",
                   help="tasks blocked by store backpressure"),
            Sample("store_commits_total", st.commits, help="store transactions committed"),
            Sample("store_operations_total", st.operations, help="write operations committed"),
            Sample("store_reports_total", st.reports, help="report rows committed"),
            Sample("store_failed_operations_total", st.failed_operations,
                   help="write operations that failed"),
            Sample("store_busy_retries_total", st.busy_retries,
                   help="commits retried on a busy database"),
            Sample("store_batch_size", st.last_batch, kind="gauge",
                   help="operations in the last transaction"),
            Sample("store_queued_readings", st.queued_reports, kind="gauge",
                   help="readings (and other operations' cost) waiting for the writer"),
            Sample("store_queue_networks", st.queued_networks, kind="gauge",
                   help="networks with writes waiting for the writer"),
            Sample("store_largest_network_queue_readings",
                   st.largest_queues[0][2] if st.largest_queues else 0, kind="gauge",
                   help="the cost queued by the network with the most"),
            Sample("store_queue_waits_total", st.waits_network_full, (("cause", "network"),),
                   help="submits that waited for room, by the bound that held them"),
            Sample("store_queue_waits_total", st.waits_total_full, (("cause", "total"),)),
        ]
        if st.commit_latency is not None:
            out.append(_histogram("store_commit_seconds", st.commit_latency,
                                  "duration of each store transaction (group commit)"))
    if http is not None:
        for key, value in sorted(http.counters.items()):
            if key.startswith("responses_"):  # responses_2xx: one family, the class a label
                out.append(Sample("http_responses_total", value,
                                  (("code", key.removeprefix("responses_")),),
                                  help="HTTP API responses, by status class"))
            else:
                out.append(Sample(f"http_{key}_total", value, help=f"HTTP API {key}"))
        for route, latency in sorted(http.request_latency.items()):
            out.append(_histogram("http_request_seconds", latency,
                                  "HTTPS request read to response sent, by route class",
                                  (("route", route),)))
    return out


def _histogram(name: str, histogram: Histogram, help_: str,
               labels: tuple[tuple[str, str], ...] = ()) -> Sample:
    return Sample(name, histogram.sum, labels, kind="histogram", help=help_,
                  histogram=histogram)
