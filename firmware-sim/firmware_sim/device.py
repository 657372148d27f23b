"""One simulated device: a paho client that behaves as the protocol asks a firmware to.

Life (docs/protocol.md section 7): connect with the bundle's certificate, subscribe to
`model/+`, `model/accepted/+`, `errors`, `control/#`, publish the model (QoS 1) and wait for
a fresh (not retained) `model/accepted` and the `model/accepted/<device>` piece of every
device it lists (each device's value UUIDs); then report every read-only value each tick (QoS 1,
`{"data":..,"timestamp":..}`). A `control/<device>/<value>` command is applied and the new
value reported back. When the connection drops, readings go to a bounded buffer (oldest
dropped first, and counted) and are sent as `{"reports": [...]}` batches once the model is
accepted again. Reconnects back off exponentially with jitter (half to all of
min(cap, base x 2^n)) so a fleet does not stampede a restarting gateway.

MQTT 3.1.1 by default; `mqtt="5"` speaks MQTT 5 (a persistent session: clean start 0 and a
session expiry interval) and reports what only MQTT 5 can say: the reason code and reason
string of a refused report (PUBACK reason >= 0x80, counted in `refused`), of a refused
CONNACK and of a DISCONNECT the gateway sent.

All methods except `start`/`stop` run on the `Loop` thread; counters in `stats` are plain ints
other threads may read.
"""

from __future__ import annotations

import json
import random
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .bundle import Bundle
from .loop import Loop
from .model import THERMOSTAT, Readings, ValueSpec, values_of

BATCH_MAX = 1000  # readings per publish (docs/protocol.md section 8)
MQTT_VERSIONS = {"3.1.1": paho.MQTTv311, "5": paho.MQTTv5}
SESSION_EXPIRY = 3600  # s the gateway keeps an MQTT 5 session after a disconnect
# `model/accepted/+`: each device's value UUIDs come on their own topic (docs/protocol.md).
SUBSCRIPTIONS = [("model/+", 1), ("model/accepted/+", 1), ("errors", 1), ("control/#", 1)]

EventSink = Callable[["SimDevice", str, dict[str, Any]], None]


@dataclass
class DeviceStats:
    """What one device did; summed over a fleet."""

    connected: int = 0  # 1 while a session is up
    connects: int = 0  # successful CONNACKs
    reconnects: int = 0  # successful CONNACKs after the first
    connect_failures: int = 0  # TCP/TLS errors, refused CONNACKs
    disconnects: int = 0
    sent: int = 0  # readings published
    acked: int = 0  # readings the gateway acknowledged (stored)
    refused: int = 0  # readings the gateway refused in its PUBACK (MQTT 5 reason >= 0x80)
    errors: int = 0  # errors the gateway named (errors topic, model/rejected)
    controls: int = 0  # control commands applied
    buffered: int = 0  # readings now waiting in the offline buffer
    dropped: int = 0  # readings dropped because the offline buffer was full
    batches: int = 0  # batch publishes flushed from the buffer

    FIELDS = ("connected", "connects", "reconnects", "connect_failures", "disconnects", "sent",
              "acked", "refused", "errors", "controls", "buffered", "dropped", "batches")

    def as_dict(self) -> dict[str, int]:
        return {f: getattr(self, f) for f in self.FIELDS}


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: base x 2^n capped, with jitter in [half, whole]."""

    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        full = min(self.cap, self.base * (2 ** min(attempt, 30)))
        return rng.uniform(full / 2, full)


def utc_timestamp(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SimDevice:
    """A simulated firmware for one bundle, driven by a `Loop`."""

    def __init__(
        self,
        bundle: Bundle,
        loop: Loop,
        host: str,
        port: int,
        *,
        model: dict[str, Any] = THERMOSTAT,
        rate: float = 1.0,
        seed: int | str = 0,
        client_id: str | None = None,
        buffer_limit: int = 10_000,
        backoff: Backoff = Backoff(),
        keepalive: int = 30,
        on_event: EventSink | None = None,
        mqtt: str = "3.1.1",
        session_expiry: int = SESSION_EXPIRY,
    ) -> None:
        self.bundle = bundle
        self.loop = loop
        self.model = model
        self.values = values_of(model)
        self._by_topic = {v.topic: v for v in self.values}
        self.readings = Readings(self.values, f"{seed}:{bundle.name}")
        self.rate = rate
        self.stats = DeviceStats()
        self.tree: dict[str, Any] | None = None  # the network as model/accepted[/+] tell it
        self._summary: dict[str, Any] | None = None  # the last model/accepted
        self._pieces: dict[str, dict[str, Any]] = {}  # device name -> model/accepted/<name>
        self._live_summary = False  # a fresh (not retained) model/accepted on this connection
        self.rejected: list[str] | None = None
        self.declared = False  # model/accepted seen on this connection
        self.stopped = False
        self.ticks = 0
        self._rng = random.Random(f"backoff:{seed}:{bundle.name}")
        self._backoff = backoff
        self._attempt = 0
        self._stopping = False
        self._buffer: deque[tuple[ValueSpec, dict[str, Any]]] = deque()
        self._buffer_limit = buffer_limit
        self._inflight: dict[int, int] = {}
        self._applied: dict[str, tuple[Any, Any]] = {}
        self._ticking = False
        self._on_event = on_event
        self._stop_waiters: list[Callable[[], None]] = []
        self.client_id = client_id or f"sim-{bundle.name}"
        if mqtt not in MQTT_VERSIONS:
            raise ValueError(f"MQTT version {mqtt!r}: expected one of {', '.join(MQTT_VERSIONS)}")
        self.mqtt = mqtt
        v5 = mqtt == "5"
        # MQTT 5 has no clean session flag: clean start 0 plus an expiry is the same intent.
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        clean_session=None if v5 else False, protocol=MQTT_VERSIONS[mqtt])
        c.tls_set(ca_certs=str(bundle.ca), certfile=str(bundle.cert), keyfile=str(bundle.key),
                  cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = session_expiry
            c.connect_async(host, port, keepalive, clean_start=False, properties=props)
        else:
            c.connect_async(host, port, keepalive)
        self.client = c
        loop.attach(c)

    # -- control from other threads -----------------------------------------------------

    def start(self, delay: float = 0.0) -> None:
        """Boot: start sampling and connect (after `delay` s, to spread a fleet's start)."""
        if delay > 0:
            self.loop.call_soon_threadsafe(lambda: self.loop.call_later(delay, self._connect))
        else:
            self.loop.call_soon_threadsafe(self._connect)

    def stop(self, on_stopped: Callable[[], None] | None = None, drain: float = 5.0) -> None:
        """Stop ticking, wait (up to `drain` s) for outstanding acks, disconnect cleanly."""
        def begin() -> None:
            if on_stopped is not None:
                self._stop_waiters.append(on_stopped)
            if self._stopping:
                if self.stopped:
                    self._finish()  # already stopped: tell this waiter now
                return
            self._stopping = True
            if not self.stats.connected or not self._inflight:
                self._finish()
            else:
                self.loop.call_later(drain, self._finish)
        self.loop.call_soon_threadsafe(begin)

    # -- connection ---------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> None:
        if self._on_event is not None:
            self._on_event(self, kind, fields)

    def _connect(self) -> None:
        if self._stopping:
            return
        if not self._ticking and self.rate > 0:  # a firmware samples from boot, online or not
            self._ticking = True
            self.loop.call_later(1.0 / self.rate, self._tick)
        self.loop.connect_in_background(self.client, self._connect_failed)

    def _connect_failed(self, exc: BaseException) -> None:
        if not isinstance(exc, (OSError, ValueError)):  # ssl.SSLError is an OSError
            raise exc
        self.stats.connect_failures += 1
        self._event("connect_failed", error=_describe(exc))
        self._retry()

    def _retry(self) -> None:
        if self._stopping:
            return
        delay = self._backoff.delay(self._attempt, self._rng)
        self._attempt += 1
        self._event("retry", delay=round(delay, 3), attempt=self._attempt)
        self.loop.call_later(delay, self._connect)

    def _on_connect(self, client: paho.Client, _u: Any, _flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            self.stats.connect_failures += 1
            self._event("refused", reason=str(rc), **self._why(rc, props))
            return  # paho closes the socket; _on_disconnect schedules the retry
        if self._stopping:  # a connect that was under way when we were told to stop
            client.disconnect()
            return
        self._attempt = 0
        self.stats.connected = 1
        self.stats.connects += 1
        if self.stats.connects > 1:
            self.stats.reconnects += 1
        self.declared = False
        self._live_summary = False
        self._event("connected", client_id=self.client_id, reconnect=self.stats.connects > 1)
        client.subscribe(SUBSCRIPTIONS)
        client.publish("model", json.dumps(self.model).encode(), qos=1)

    def _on_disconnect(self, _c: Any, _u: Any, flags: Any, rc: Any, props: Any) -> None:
        was_up = self.stats.connected
        self.stats.connected = 0
        self.declared = False
        if was_up:
            self.stats.disconnects += 1
        # The gateway's own DISCONNECT (MQTT 5) names why: say it, with its reason string.
        by_server = getattr(flags, "is_disconnect_packet_from_server", False)
        self._event("disconnected", reason=str(rc),
                    **(self._why(rc, props) if by_server and self.mqtt == "5" else {}))
        if self._stopping:
            self._finish()
        else:
            self._retry()

    def _finish(self) -> None:
        if self.stats.connected:
            self.client.disconnect()  # _on_disconnect comes back here once it is written
            return
        if not self.stopped:
            self.stopped = True
            self.loop.detach(self.client)
            self._event("stopped", **self.stats.as_dict())
        waiters, self._stop_waiters = self._stop_waiters, []
        for waiter in waiters:
            waiter()

    @staticmethod
    def _why(rc: Any, props: Any) -> dict[str, Any]:
        """An MQTT 5 answer's reason code (hex, as the spec lists them) and reason string."""
        why: dict[str, Any] = {"reason_code": f"0x{int(rc.value):02X}"}
        text = getattr(props, "ReasonString", None)
        if text:
            why["reason_string"] = text
        return why

    # -- messages -----------------------------------------------------------------------

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        topic = msg.topic
        try:
            doc = json.loads(msg.payload)
        except (ValueError, UnicodeDecodeError):
            self._event("unreadable", topic=topic)
            return
        if topic == "model/accepted":
            self._summary = doc
            self._live_summary = self._live_summary or not msg.retain
            self._learn()
        elif topic.startswith("model/accepted/"):
            if isinstance(doc, dict) and isinstance(doc.get("device"), dict):
                self._pieces[topic.removeprefix("model/accepted/")] = doc["device"]
                self._learn()
        elif topic == "model/rejected":
            if msg.retain:
                return
            self.rejected = list(doc.get("reasons", []))
            self.stats.errors += 1
            self._event("model_rejected", reasons=self.rejected)
        elif topic == "errors":
            listed = doc.get("errors", [])
            self.stats.errors += len(listed) + int(doc.get("more", 0))
            self._event("gateway_errors", topic=doc.get("topic"), errors=listed)
        elif topic.startswith("control/"):
            self._control(topic.removeprefix("control/"), doc)

    def _learn(self) -> None:
        """Put the tree together from the summary and the per-device pieces; once a fresh
        summary has come and every device it lists has its piece (with the UUID the summary
        gives), the declaration is done: report."""
        summary = self._summary
        if not isinstance(summary, dict) or not isinstance(summary.get("network"), dict):
            return
        network = summary["network"]
        devices, complete = [], True
        for entry in network.get("devices", []):
            piece = self._pieces.get(entry.get("name"))
            if piece is None or piece.get("uuid") != entry.get("uuid"):
                complete = False
                continue
            devices.append(piece)
        self.tree = {"network": {"uuid": network.get("uuid"), "devices": devices}}
        if complete and self._live_summary and not self.declared:
            self.declared = True
            self._event("declared", network=network.get("uuid"), devices=_uuids(self.tree))
            self._flush()
            for value in self.values:  # the device's truth about its settings
                if value.reportable and not value.sensor:
                    self._report(value, self.readings.current(value))

    def _control(self, where: str, doc: dict[str, Any]) -> None:
        value = self._by_topic.get(where)
        key = (doc.get("timestamp"), doc.get("data"))
        if self._applied.get(where) == key:
            return  # the retained copy of a command already applied
        self._applied[where] = key
        if value is None or "w" not in value.permission:
            self._event("control_ignored", value=where, reason="not a writable value here")
            return
        try:
            data = value.coerce(str(doc.get("data")))
        except ValueError as exc:
            self._event("control_ignored", value=where, reason=str(exc))
            return
        self.readings.set(value, data)
        self.stats.controls += 1
        self._event("control", value=where, data=data)
        if value.reportable:
            self._report(value, data)

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: Any, props: Any) -> None:
        readings = self._inflight.pop(mid, 0)
        if rc.is_failure:  # MQTT 5: the gateway took the message over, and refused it
            self.stats.refused += readings
            self._event("report_refused", mid=mid, readings=readings, **self._why(rc, props))
        else:
            self.stats.acked += readings
        if self._stopping and not self._inflight:
            self._finish()

    # -- reporting ----------------------------------------------------------------------

    def _tick(self) -> None:
        if self._stopping:
            self._ticking = False
            return
        self.ticks += 1
        readings = {}
        for value in self.values:
            if value.sensor:
                readings[value.topic] = self.readings.next(value)
                self._report(value, readings[value.topic])
        self._event("tick", n=self.ticks, online=self.declared, **readings)
        self.loop.call_later(1.0 / self.rate, self._tick)

    def _report(self, value: ValueSpec, data: float | str) -> None:
        reading = {"data": data, "timestamp": utc_timestamp()}
        if self.declared:
            self._publish(value, json.dumps(reading).encode(), 1)
        else:
            if len(self._buffer) >= self._buffer_limit:
                self._buffer.popleft()
                self.stats.dropped += 1
            self._buffer.append((value, reading))
        self.stats.buffered = len(self._buffer)

    def _publish(self, value: ValueSpec, payload: bytes, readings: int) -> None:
        info = self.client.publish(f"report/{value.topic}", payload, qos=1)
        self._inflight[info.mid] = readings
        self.stats.sent += readings

    def _flush(self) -> None:
        """Send what was buffered offline, one `{"reports": [...]}` batch per value."""
        by_value: dict[str, tuple[ValueSpec, list[dict[str, Any]]]] = {}
        while self._buffer:
            value, reading = self._buffer.popleft()
            by_value.setdefault(value.topic, (value, []))[1].append(reading)
        for value, readings in by_value.values():
            for i in range(0, len(readings), BATCH_MAX):
                chunk = readings[i:i + BATCH_MAX]
                self._publish(value, json.dumps({"reports": chunk}).encode(), len(chunk))
                self.stats.batches += 1
                self._event("flushed", value=value.topic, readings=len(chunk))
        self.stats.buffered = 0


def _uuids(doc: dict[str, Any]) -> dict[str, str]:
    """{"device/value": uuid} of the assembled tree, plus {"device": uuid}."""
    out: dict[str, str] = {}
    for device in doc.get("network", {}).get("devices", []):
        out[device["name"]] = device["uuid"]
        for value in device.get("values", []):
            out[f"{device['name']}/{value['name']}"] = value["uuid"]
    return out


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
