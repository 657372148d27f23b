"""The typed metrics object: closed label sets, frozen records, the `stopped` line's counts."""

from __future__ import annotations

import dataclasses
import io
import json

import pytest

from gateway.app import Gateway
from gateway.config import load_config
from gateway.logs import EventLog
from gateway.metrics import SIGN_OUTCOMES, CountBy, GatewayMetrics, counts, sign_outcome
from gateway.reasons import DisconnectReason, RefusalCause, ThrottleLimit
from gateway.tls import _VERIFY_CAUSES, classify_handshake_error


def test_a_label_outside_the_closed_set_is_an_error_not_a_new_series():
    metrics = GatewayMetrics()
    with pytest.raises(KeyError):
        metrics.mqtt.handshakes_refused.inc("CERT_EXPRIED")
    with pytest.raises(KeyError):
        metrics.mqtt.messages_in[3].inc()
    with pytest.raises(KeyError):
        metrics.http.request_seconds["/api/v1/networks"].observe(0.1)
    assert len(metrics.mqtt.handshakes_refused.children) == len(RefusalCause)


def test_labels_given_as_enum_members_or_their_tokens_count_in_one_series():
    family = GatewayMetrics().mqtt.throttled
    family.inc(ThrottleLimit.MAX_CONNECTIONS)
    family.inc("max_connections")  # the same token as a plain string: the same series
    assert family.values()["max_connections"] == 2
    assert sum(family.values().values()) == 2


def test_records_are_frozen_so_nothing_replaces_a_metric_after_construction():
    metrics = GatewayMetrics()
    with pytest.raises(dataclasses.FrozenInstanceError):
        metrics.mqtt = metrics.mqtt  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        metrics.mqtt.wills_published = metrics.mqtt.wills_published  # type: ignore[misc]


def test_two_objects_never_share_a_counter():
    a, b = GatewayMetrics(), GatewayMetrics()
    a.mqtt.wills_published.inc()
    a.mqtt.disconnects.inc(DisconnectReason.REVOKED)
    assert b.mqtt.wills_published.value == 0
    assert b.mqtt.disconnects[DisconnectReason.REVOKED].value == 0


def test_every_cause_the_tls_classifier_names_has_a_series():
    causes = set(_VERIFY_CAUSES.values()) | {
        classify_handshake_error(OSError("reset"))[0]}
    family = GatewayMetrics().mqtt.handshakes_refused
    for cause in causes:
        family.inc(cause)  # KeyError if the family lacked it
    assert sum(family.values().values()) == len(causes)


def test_signer_words_this_release_does_not_know_fold_into_other():
    assert sign_outcome("rate_claim") == "rate_claim"
    assert sign_outcome("http_502") == "other"
    assert sign_outcome("x" * 10_000) == "other"
    assert "accepted" in SIGN_OUTCOMES and "other" in SIGN_OUTCOMES


def test_counts_show_only_what_moved_nested_by_label():
    metrics = GatewayMetrics()
    metrics.mqtt.wills_published.inc(2)
    metrics.mqtt.messages_in[1].inc()
    metrics.mqtt.handshakes_refused.inc(RefusalCause.CERT_EXPIRED)
    metrics.console.signups.inc()
    got = counts(metrics.mqtt, metrics.console)
    assert got == {"wills_published": 2, "messages_in": {"1": 1},
                   "handshakes_refused": {"CERT_EXPIRED": 1}, "console_signups": 1}
    json.dumps(got)  # the `stopped` line's counters


def test_every_exposed_name_is_unique_and_counters_end_in_total():
    metrics = GatewayMetrics()
    names = []
    for record in (metrics.mqtt, metrics.provisioning, metrics.console, metrics.http,
                   metrics.latency):
        for f in dataclasses.fields(record):
            metric = getattr(record, f.name)
            names.append(metric.name)
            assert metric.help
            assert metric.name.endswith("_total") == (metric.kind == "counter"), metric.name
            if isinstance(metric, CountBy):
                assert metric.children, metric.name
    assert len(names) == len(set(names))


def test_the_gateway_counts_into_the_object_it_was_given(ca_home):
    metrics = GatewayMetrics()
    config = load_config(None, {"ca_home": ca_home.path, "mqtt": "127.0.0.1:0"})
    gateway = Gateway(config, log=EventLog(io.StringIO()), metrics=metrics)
    assert gateway.metrics is metrics and gateway.provisioning.metrics is metrics
    metrics.mqtt.crls_rejected.inc()
    assert gateway.statistics()["counters"] == {"crls_rejected": 1}
