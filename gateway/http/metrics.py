"""/metrics: the gateway's figures in Prometheus exposition, through `prometheus_client`.

`gateway_samples(...)` reads the gateway's typed metrics (`gateway.metrics`: counters,
gauges, histograms, each with its name and help) and the broker's, the store's and ingest's
`statistics()` at scrape time into `Sample`s; `render(samples)` exposes them together with
the process (`process_*`), Python runtime (`python_*`) and build (`fleetgate_build_info`)
collectors of `prometheus_client`, so the exposition format and its escaping are the
library's, not ours.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
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
from ..metrics import CountBy, Timing, TimingBy, families

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


def metric_samples(*records: Any) -> list[Sample]:
    """Samples from typed metric records (`gateway.metrics`): every family, every label of
    its closed set (at 0 before it first moves: a dashboard sees zeros, not gaps)."""
    out: list[Sample] = []
    for record in records:
        for metric in families(record):
            if isinstance(metric, CountBy):
                for key, count in metric.children.items():
                    out.append(Sample(metric.name, count.value, ((metric.label, metric.text(key)),),
                                      help=metric.help))
            elif isinstance(metric, TimingBy):
                for key, timing in metric.children.items():
                    out.append(_histogram(metric.name, timing, metric.help,
                                          ((metric.label, str(key)),)))
            elif isinstance(metric, Timing):
                out.append(_histogram(metric.name, metric, metric.help))
            else:
                out.append(Sample(metric.name, metric.value, kind=metric.kind,
                                  help=metric.help))
    return out


def gateway_samples(gateway: Any = None, store: Any = None, ingest: Any = None,
                    http: Any = None) -> list[Sample]:
    """Everything /metrics shows; each source is optional (tests run parts alone)."""
    out: list[Sample] = []
    if gateway is not None:
        out.append(Sample("connections", len(gateway.connections), kind="gauge",
                          help="live MQTT connections"))
        m = gateway.metrics
        out += metric_samples(m.mqtt, m.provisioning, m.console, m.latency, m.cluster,
                              m.storage)
        for key, value in gateway.broker.statistics().items():
            kind = "gauge" if key == "live_sessions" else "counter"
            name = f"broker_{key}" + ("" if kind == "gauge" else "_total")
            out.append(Sample(name, value, kind=kind, help=f"broker {key.replace('_', ' ')}"))
        out.append(Sample("tls_reloads_total", gateway.tls.reloads, help="TLS/CRL reloads"))
        slots = gateway.handshakes
        out += [
            Sample("handshakes_in_progress", len(slots), kind="gauge",
                   help="MQTT TLS handshakes holding a slot (max_handshakes_in_progress)"),
            Sample("handshakes_waiting", slots.waiting, kind="gauge",
                   help="MQTT TLS handshakes waiting for a slot"),
            Sample("handshakes_waited_total", slots.waited,
                   help="MQTT TLS handshakes that waited for a slot"),
            Sample("handshake_leases_expired_total", slots.leases_expired,
                   help="handshake slots freed by their lease running out"),
        ]
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
        reconnects = getattr(store, "reconnects", None)  # PostgreSQL's writer only
        if reconnects is not None:
            out.append(Sample("store_reconnects_total", reconnects,
                              help="store writer connections to PostgreSQL opened again "
                                   "after a loss (the batch on the lost one failed, "
                                   "unacknowledged)"))
        if st.commit_latency is not None:
            out.append(_histogram("store_commit_seconds", st.commit_latency,
                                  "duration of each store transaction (group commit)"))
    if http is not None:
        out += metric_samples(http.metrics)
    membership = getattr(gateway, "membership", None)
    if membership is not None:
        out += cluster_samples(membership)
    return out


NODE_STATES = ("alive", "lapsed", "dead", "reaped")


def cluster_samples(view: Any, now: datetime | None = None) -> list[Sample]:
    """The `fleetgate_cluster_*` family from a `gateway.cluster.nodes.ClusterView`: what this
    node read of the node table at its last heartbeat (the same as `cluster status`)."""
    now = now if now is not None else datetime.now(UTC)
    states = {n.name: n.state(now, view.dead_after) for n in view.nodes}
    out = [Sample("cluster_nodes", sum(s == state for s in states.values()),
                  (("state", state),), kind="gauge",
                  help="nodes in the node table, by state (alive, lapsed: no heartbeat "
                       "for node_dead_after, dead: being reaped, reaped)")
           for state in NODE_STATES]
    for n in view.nodes:
        labels = (("node", n.name),)
        out.append(Sample("cluster_node_heartbeat_age_seconds", n.age(now), labels,
                          kind="gauge", help="seconds since the node's last heartbeat (its lag)"))
        out.append(Sample("cluster_node_connections", n.connections, labels, kind="gauge",
                          help="live MQTT connections of the node, at its last heartbeat"))
        out.append(Sample("cluster_node_up", 1 if states[n.name] == "alive" else 0, labels,
                          kind="gauge", help="1 while the node's heartbeat is fresh"))
    out.append(Sample("cluster_nodes_reaped_total", view.reaped,
                      help="dead nodes this node reaped (wills published, sessions taken)"))
    out.append(Sample("cluster_heartbeat_failures_total", view.heartbeat_failures,
                      help="heartbeats that could not reach PostgreSQL"))
    for n in view.nodes:
        if n.bus_lag is not None:
            out.append(Sample("cluster_node_bus_lag_seconds", n.bus_lag, (("node", n.name),),
                              kind="gauge", help="mean relay lag to the node over its last "
                                                 "heartbeat interval"))
    return out


def _histogram(name: str, histogram: Histogram, help_: str,
               labels: tuple[tuple[str, str], ...] = ()) -> Sample:
    return Sample(name, histogram.sum, labels, kind="histogram", help=help_,
                  histogram=histogram)
