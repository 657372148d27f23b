"""Figure 8, across nodes: relay rate and latency, and session takeover time.

Two nodes (separate `fleet-gateway serve` processes, names bench-a and bench-b) on one
PostgreSQL. One network's certificate connects twice (paho, TLS 1.3, mutual):

- relay: a subscriber on bench-b (`chat/#`, QoS 1) and a publisher on bench-a; each
  payload carries its send time (one machine, one clock). Latency (p50, p99): messages paced
  at `PACED_RATE`, so that no queue in the publisher's own client is counted. Rate: a flood
  as fast as 100 in flight allow, received per second (first send to last receipt), and how
  many never arrived (a phase ends once all arrived or none came for `SETTLE` seconds), with
  the nodes' own counts of relay drops and gaps.
- takeover: a persistent session (clean session 0) connected on one node, then the same
  client id connecting on the other: the time from the TCP connect to its CONNACK (TLS
  handshake included), beside the same for a fresh client id (no takeover), both medians
  over `TAKEOVERS` tries.
"""

from __future__ import annotations

import contextlib
import statistics
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt

from bench.cluster import gateway_on, postgres
from bench.context import Bench, stopped
from bench.loadgen import LoadError
from bench.results import Row
from bench.servers import Server, Unavailable

TAKEOVERS = 10
RELAY_WINDOW = 100
SETTLE = 5.0  # seconds without a new message after which the relay run ends
PACED_RATE = 100.0  # messages per second of the latency phase


@contextlib.contextmanager
def _client(bench: Bench, port: int, client_id: str, *, clean: bool = True,
            on_message: Any = None) -> Iterator[tuple[mqtt.Client, float]]:
    """A connected paho client and the seconds its connect took (TCP to CONNACK)."""
    device = bench.pki.devices[0]
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=clean)
    client.tls_set(ca_certs=str(bench.pki.root), certfile=str(device.cert),
                   keyfile=str(device.key))
    client.max_inflight_messages_set(RELAY_WINDOW)
    client.max_queued_messages_set(0)
    # No reconnect while measuring: a session taken over must stay with its new node.
    client.reconnect_delay_set(min_delay=300, max_delay=300)
    connected, disconnected = threading.Event(), threading.Event()
    codes: list[Any] = []

    def on_connect(_c, _u, _f, rc, _p=None) -> None:  # noqa: ANN001
        codes.append(rc)
        connected.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *_a: disconnected.set()
    if on_message is not None:
        client.on_message = on_message
    client.user_data_set({"disconnected": disconnected})
    started = time.perf_counter()
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    try:
        if not connected.wait(30) or codes[0] != 0:
            raise LoadError(f"{client_id}: no CONNACK 0 from port {port}: {codes}")
        yield client, time.perf_counter() - started
    finally:
        client.disconnect()
        client.loop_stop()


def _relay_run(bench: Bench, messages: int, paced: int) -> dict[str, Any]:
    with postgres(bench) as pg, gateway_on(bench, pg, 1, node="bench-a") as a, \
            gateway_on(bench, pg, 1, node="bench-b") as b:
        phases: dict[str, list[tuple[int, float]]] = {"flood": [], "paced": []}
        lock = threading.Lock()
        probe = threading.Event()

        def on_message(_c, _u, msg) -> None:  # noqa: ANN001
            now = time.time_ns()
            phase = msg.topic.rsplit("/", 1)[-1]
            if phase == "probe":
                probe.set()
                return
            sent, = struct.unpack_from(">q", msg.payload)
            with lock:
                phases[phase].append((now, (now - sent) / 1e9))

        def settle(phase: str, expected: int) -> None:
            """Until all arrived, or none for SETTLE seconds (a relay that dropped some)."""
            seen, since = 0, time.monotonic()
            while seen < expected and time.monotonic() - since < SETTLE:
                time.sleep(0.1)
                if len(phases[phase]) != seen:
                    seen, since = len(phases[phase]), time.monotonic()

        with _client(bench, b.port, "relay-sub", on_message=on_message) as (sub, _), \
                _client(bench, a.port, "relay-pub") as (pub, _):
            done = threading.Event()
            sub.on_subscribe = lambda *_a: done.set()
            sub.subscribe("chat/#", qos=1)
            if not done.wait(30):
                raise LoadError("the subscriber got no SUBACK")
            # bench-a learns of bench-b's subscriber through the bus: probe until relayed.
            deadline = time.monotonic() + 30
            while not probe.wait(0.2):
                pub.publish("chat/probe", b"x", qos=1)
                if time.monotonic() > deadline:
                    raise LoadError("no message relayed from bench-a to bench-b in 30 s")
            # Latency, paced at PACED_RATE: no queue in the publisher's client.
            for i in range(paced):
                pub.publish("chat/paced", struct.pack(">qq", time.time_ns(), i) + b"." * 84,
                            qos=1)
                time.sleep(1 / PACED_RATE)
            settle("paced", paced)
            # Rate: a flood as fast as RELAY_WINDOW in flight allow.
            cpu0 = Server.cpu_seconds(a) + Server.cpu_seconds(b)  # the gateways alone
            first = time.time_ns()
            for i in range(messages):
                pub.publish("chat/flood", struct.pack(">qq", time.time_ns(), i) + b"." * 84,
                            qos=1)
            settle("flood", messages)
            cpu = Server.cpu_seconds(a) + Server.cpu_seconds(b) - cpu0
            dropped = b.metric("cluster_relay_gaps_total"), a.metric(
                "cluster_relay_dropped_total"), b.metric("broker_dropped_total")
    flood, latency = phases["flood"], sorted(x for _, x in phases["paced"])
    if not flood or not latency:
        raise LoadError("nothing was relayed")
    seconds = (flood[-1][0] - first) / 1e9
    got = len(flood)
    return {"value": round(got / seconds, 1), "messages": messages, "received": got,
            "lost": messages - got, "paced_lost": paced - len(latency),
            "relay_gaps_on_b": dropped[0], "relay_dropped_on_a": dropped[1],
            # a live subscriber's outbox past max_queued drops (the slow-reader limit)
            "outbox_dropped_on_b": dropped[2],
            "seconds": round(seconds, 3),
            "p50_ms": round(latency[len(latency) // 2] * 1e3, 2),
            "p99_ms": round(latency[int(len(latency) * 0.99)] * 1e3, 2),
            "server_cpu_s": round(cpu, 2),
            "per_cpu_s": round(got / cpu, 1) if cpu > 0 else None}


def _takeover_run(bench: Bench) -> dict[str, Any]:
    with postgres(bench) as pg, gateway_on(bench, pg, 1, node="bench-a") as a, \
            gateway_on(bench, pg, 1, node="bench-b") as b:
        takeovers, fresh = [], []
        for i in range(TAKEOVERS):
            first, second = (a, b) if i % 2 == 0 else (b, a)
            with _client(bench, first.port, f"roamer-{i}", clean=False) as (old, _):
                gone = old.user_data_get()["disconnected"]
                with _client(bench, second.port, f"roamer-{i}", clean=False) as (_, took):
                    if not gone.wait(30):
                        raise LoadError("the old session was not closed by the takeover")
                    takeovers.append(took)
            with _client(bench, second.port, f"fresh-{i}") as (_, took):
                fresh.append(took)
    return {"value": round(statistics.median(takeovers) * 1e3, 2),
            "fresh_connect_ms": round(statistics.median(fresh) * 1e3, 2),
            "max_ms": round(max(takeovers) * 1e3, 2), "tries": TAKEOVERS}


def relay_rows(bench: Bench) -> list[Row]:
    quick = bench.sizes.failover_devices < 10
    messages, paced = (200, 50) if quick else (20_000, 1_000)
    system = "fleetgate, 2 nodes, PostgreSQL"
    rate = Row("8", "relay across nodes: QoS 1, publisher on A, subscriber on B", system,
               "relayed messages/s", notes=[
                   f"{RELAY_WINDOW} QoS 1 messages in flight, 100-byte payloads, same "
                   "network; per CPU-second counts both gateway processes, not PostgreSQL "
                   "(the relay goes through LISTEN/NOTIFY: its CPU is in the gateways)"])
    pace = (f"{paced} QoS 1 messages paced at {PACED_RATE:g}/s, publish on A to receipt "
            "on B")
    p50 = Row("8", "relay latency across nodes, p50", system, "ms", lower_is_better=True,
              cpu_key=None, notes=[pace])
    p99 = Row("8", "relay latency across nodes, p99", system, "ms", lower_is_better=True,
              cpu_key=None, notes=[pace])
    takeover = Row("8", f"session takeover across nodes (median of {TAKEOVERS})", system,
                   "ms from connect to CONNACK", lower_is_better=True, cpu_key=None,
                   notes=["TLS handshake included; fresh_connect_ms is the same connect "
                          "without a session to take over"])
    for _ in range(bench.runs):
        try:
            run = _relay_run(bench, messages, paced)
            rate.add(**run)
            p50.add(value=run["p50_ms"])
            p99.add(value=run["p99_ms"])
            bench.log(f"  relay: {run['value']}/s, p50 {run['p50_ms']} ms, "
                      f"p99 {run['p99_ms']} ms, {run['lost']} of {messages} not received "
                      f"({run['outbox_dropped_on_b']} dropped by the subscriber's full "
                      "outbox)")
            run = _takeover_run(bench)
            takeover.add(**run)
            bench.log(f"  takeover: {run['value']} ms (fresh connect "
                      f"{run['fresh_connect_ms']} ms)")
        except Unavailable as exc:
            for row in (rate, p50, p99, takeover):
                row.unavailable = str(exc)
            break
        except LoadError as exc:
            for row in (rate, p50, p99, takeover):
                stopped(row, exc)
            break
    return [rate, p50, p99, takeover]
