"""Figure 8, across nodes: relay rate and latency, and session takeover time.

Two nodes (separate `fleet-gateway serve` processes, names bench-a and bench-b) on one
PostgreSQL. One network's certificate connects twice (paho, TLS 1.3, mutual):

- relay: a subscriber on bench-b (`chat/#`, QoS 1) and a publisher on bench-a; each
  payload carries its send time (one machine, one clock). Latency (p50, p99): messages paced
  at `PACED_RATE`, so that no queue in the publisher's own client is counted. Rate: a flood
  as fast as 100 in flight allow, received per second (first send to last receipt), and how
  many never arrived (a phase ends once all arrived or none came for `SETTLE` seconds), with
  the nodes' own counts of relay drops and gaps.
  The bench nodes' `max_queued` is raised past the flood (`FLOOD_LIMITS`): with the default
  1 000, the subscriber's outbox on bench-b fills while the paho reader lags, the broker
  drops that message and closes the slow reader (THROTTLED "max_queued reached"), and every
  later message finds no subscriber: the slow-reader limit, not a relay loss. Raised, the
  flood measures what arrives end to end, the subscriber's own read rate included.
- control: a control command POSTed to bench-a's HTTPS API (operator certificate, one
  keep-alive connection) until the paho device subscribed to `control/#` receives it:
  p50/p99 over `CONTROLS` commands sent one after another, the device on bench-b (across
  nodes: the bus carries it) and, beside it, another network's device on bench-a itself.
- takeover: a persistent session (clean session 0) connected on one node, then the same
  client id connecting on the other: the time from the TCP connect to its CONNACK (TLS
  handshake included), beside the same for a fresh client id (no takeover), both medians
  over `TAKEOVERS` tries.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import ssl
import statistics
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from bench.cluster import gateway_on, postgres
from bench.context import Bench, stopped
from bench.loadgen import LoadError
from bench.pki import fleet_ca_command, fleet_ca_env
from bench.results import Row
from bench.servers import Server, Unavailable

TAKEOVERS = 10
RELAY_WINDOW = 100
SETTLE = 5.0  # seconds without a new message after which the relay run ends
PACED_RATE = 100.0  # messages per second of the latency phase
CONTROLS = 50  # control commands per placement (across nodes, one node)
CONTROL_MODEL = json.dumps({"devices": [{"name": "ctl", "values": [
    {"name": "target", "permission": "rw",
     "number": {"min": 0, "max": 1_000_000, "step": 1}}]}]}).encode()


def flood_limits(messages: int) -> str:
    """[limits] lines for the relay nodes: a live subscriber's outbox holds the whole flood
    (the default max_queued closes a reader that lags by 1 000 messages)."""
    return f"max_queued = {messages + RELAY_WINDOW}\n"


@contextlib.contextmanager
def _client(bench: Bench, port: int, client_id: str, *, clean: bool = True,
            on_message: Any = None, device: Any = None) -> Iterator[tuple[mqtt.Client, float]]:
    """A connected paho client (the first bench device's certificate unless `device`) and
    the seconds its connect took (TCP to CONNACK)."""
    device = device if device is not None else bench.pki.devices[0]
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
    limits = flood_limits(messages)
    with postgres(bench) as pg, gateway_on(bench, pg, 1, node="bench-a", limits=limits) as a, \
            gateway_on(bench, pg, 1, node="bench-b", limits=limits) as b:
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
            closed = sub.user_data_get()["disconnected"].is_set()
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
            "subscriber_closed": closed,  # by the node (a slow reader past max_queued)
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


def _operator(bench: Bench) -> Path:
    """An operator certificate for the HTTPS API (`fleet-ca issue operator`), made once."""
    out = bench.work / "operator"
    if not (out / "operator.crt").exists():
        exe = fleet_ca_command()
        if exe is None:
            raise Unavailable("fleet-ca is not installed")
        done = subprocess.run([exe, "issue", "operator", "--name", "bench", "--out", str(out)],
                              env=fleet_ca_env(bench.pki.home), capture_output=True, text=True)
        if done.returncode != 0:
            raise Unavailable(f"fleet-ca issue operator: {done.stderr.strip()[:200]}")
    return out


class _Api:
    """One keep-alive HTTPS connection to a node's API, as the operator."""

    def __init__(self, bench: Bench, port: int) -> None:
        operator = _operator(bench)
        ctx = ssl.create_default_context(cafile=str(bench.pki.root))
        ctx.load_cert_chain(str(operator / "operator.crt"), str(operator / "operator.key"))
        self.conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        self.conn.request(method, path, data, {"Content-Type": "application/json"})
        answer = self.conn.getresponse()
        doc = json.loads(answer.read() or b"null")
        if answer.status != 200:
            raise LoadError(f"{method} {path}: {answer.status} {doc}")
        return doc


def _controls(bench: Bench, api: _Api, device: Any, port: int) -> tuple[list[float], Any]:
    """Seconds from each POST .../control on the API's node to its receipt by `device`
    connected on `port`, and the API's last `device_online`."""
    got: dict[int, float] = {}
    cond = threading.Condition()

    def on_message(_c, _u, msg) -> None:  # noqa: ANN001
        now = time.perf_counter()
        try:
            i = int(float(json.loads(msg.payload)["data"]))
        except (ValueError, KeyError, TypeError):
            return
        with cond:
            got.setdefault(i, now)
            cond.notify_all()

    with _client(bench, port, "ctl", on_message=on_message, device=device) as (client, _):
        subscribed = threading.Event()
        client.on_subscribe = lambda *_a: subscribed.set()
        client.subscribe("control/#", qos=1)
        if not subscribed.wait(30):
            raise LoadError("the control device got no SUBACK")
        info = client.publish("model", CONTROL_MODEL, qos=1)
        info.wait_for_publish(30)  # acknowledged once stored: the API finds it
        if not info.is_published():
            raise LoadError("the control device's model was not acknowledged")
        tree = api.call("GET", f"/api/v1/networks/{device.uuid}")
        value = tree["network"]["devices"][0]["values"][0]["uuid"]
        seconds, online = [], None
        for i in range(1, CONTROLS + 1):
            started = time.perf_counter()
            online = api.call("POST", f"/api/v1/values/{value}/control",
                              {"data": i}).get("device_online")
            with cond:
                if not cond.wait_for(lambda i=i: i in got, 30):
                    raise LoadError(f"control {i} did not reach the device in 30 s")
                seconds.append(got[i] - started)
    return seconds, online


def _control_run(bench: Bench) -> dict[str, Any]:
    if len(bench.pki.devices) < 2:
        raise Unavailable("the control run needs two bench devices (two networks)")
    with postgres(bench) as pg, gateway_on(bench, pg, 1, node="bench-a", http=True) as a, \
            gateway_on(bench, pg, 1, node="bench-b") as b:
        api = _Api(bench, a.http_port)
        try:
            across, online = _controls(bench, api, bench.pki.devices[0], b.port)
            local, _ = _controls(bench, api, bench.pki.devices[1], a.port)
        finally:
            api.conn.close()

    def ms(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1e3, 2)

    return {"across_p50_ms": ms(across, 0.5), "across_p99_ms": ms(across, 0.99),
            "one_node_p50_ms": ms(local, 0.5), "one_node_p99_ms": ms(local, 0.99),
            "commands": CONTROLS, "device_online_across": online}


def relay_rows(bench: Bench) -> list[Row]:
    quick = bench.sizes.failover_devices < 10
    messages, paced = (200, 50) if quick else (20_000, 1_000)
    system = "fleetgate, 2 nodes, PostgreSQL"
    rate = Row("8", "relay across nodes: QoS 1, publisher on A, subscriber on B", system,
               "relayed messages/s", notes=[
                   f"{RELAY_WINDOW} QoS 1 messages in flight, 100-byte payloads, same "
                   "network; per CPU-second counts both gateway processes, not PostgreSQL "
                   "(the relay goes through LISTEN/NOTIFY: its CPU is in the gateways)",
                   "max_queued raised past the flood on both nodes: at the default (1 000) "
                   "the node closes the lagging paho subscriber (THROTTLED, the slow-reader "
                   "limit) and the rest of the flood finds no subscriber; received per "
                   "second is bounded by that reader"])
    pace = (f"{paced} QoS 1 messages paced at {PACED_RATE:g}/s, publish on A to receipt "
            "on B")
    p50 = Row("8", "relay latency across nodes, p50", system, "ms", lower_is_better=True,
              cpu_key=None, notes=[pace])
    p99 = Row("8", "relay latency across nodes, p99", system, "ms", lower_is_better=True,
              cpu_key=None, notes=[pace])
    command = (f"{CONTROLS} commands one after another, POST on bench-a's HTTPS API to "
               "receipt by a paho device (QoS 1, control/#); p99 of 50 is the slowest")
    controls = {
        key: Row("8", f"control latency, {where}, {q}", system, "ms", lower_is_better=True,
                 cpu_key=None, notes=[command])
        for key, where, q in (
            ("across_p50_ms", "across nodes (device on B)", "p50"),
            ("across_p99_ms", "across nodes (device on B)", "p99"),
            ("one_node_p50_ms", "one node (device on A)", "p50"),
            ("one_node_p99_ms", "one node (device on A)", "p99"))}
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
                      f"outbox, subscriber closed by the node: {run['subscriber_closed']}; "
                      f"relay gaps {run['relay_gaps_on_b']}, relay drops "
                      f"{run['relay_dropped_on_a']})")
            run = _control_run(bench)
            for key, row in controls.items():
                row.add(value=run[key], **run)
            bench.log(f"  control: across nodes p50 {run['across_p50_ms']} ms, p99 "
                      f"{run['across_p99_ms']} ms; one node p50 {run['one_node_p50_ms']} ms, "
                      f"p99 {run['one_node_p99_ms']} ms")
            run = _takeover_run(bench)
            takeover.add(**run)
            bench.log(f"  takeover: {run['value']} ms (fresh connect "
                      f"{run['fresh_connect_ms']} ms)")
        except Unavailable as exc:
            for row in (rate, p50, p99, *controls.values(), takeover):
                row.unavailable = str(exc)
            break
        except LoadError as exc:
            for row in (rate, p50, p99, *controls.values(), takeover):
                stopped(row, exc)
            break
    return [rate, p50, p99, *controls.values(), takeover]
