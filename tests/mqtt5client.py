"""A paho-mqtt MQTT 5 client for the integration tests (gateway and HTTP API): every
acknowledgement's reason code and properties, and the server's DISCONNECT, land in
thread-safe queues. Importable from every test folder (tests/ holds the root conftest)."""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import trio
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

WAIT = 20.0  # a deadline for "never happened", not a timing assertion


def props(kind: int, **values: Any) -> Properties:
    """A paho `Properties` of packet `kind` (PacketTypes.X) with `values` set, e.g.
    props(PacketTypes.PUBLISH, MessageExpiryInterval=5, UserProperty=[("k", "v")])."""
    p = Properties(kind)
    for name, value in values.items():
        setattr(p, name, value)
    return p


class Paho5:
    """One MQTT 5 device on paho, in paho's network thread."""

    def __init__(self, address: Any, creds: Any, client_id: str = "") -> None:
        """`address`: (host, port), or anything with .host and .port (a running gateway);
        `creds`: .cert/.key/.ca paths, or a device bundle's .cert_path/.key_path/.ca_path."""
        self.host, self.port = (address if isinstance(address, tuple)
                                else (address.host, address.port))
        cert, key, ca = (getattr(creds, n, None) or getattr(creds, f"{n}_path")
                         for n in ("cert", "key", "ca"))
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=paho.MQTTv5)
        self.client.tls_set(str(Path(ca)), str(Path(cert)), str(Path(key)))
        self.messages: queue.Queue = queue.Queue()
        self.connacks: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.acks: dict[int, tuple[Any, Any]] = {}  # mid -> (reason code, properties)
        self._acked = threading.Condition()
        self.disconnects: queue.Queue = queue.Queue()
        c = self.client
        c.on_message = lambda cl, u, m: self.messages.put(m)
        c.on_connect = lambda cl, u, flags, rc, p: self.connacks.put((flags, rc, p))
        c.on_subscribe = lambda cl, u, mid, codes, p: self.subacks.put(codes)
        c.on_publish = self._on_publish
        c.on_disconnect = lambda cl, u, flags, rc, p: self.disconnects.put((rc, p))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._acked:
            self.acks[mid] = (reason_code, properties)
            self._acked.notify_all()

    async def connect(self, *, clean_start: bool = True, keepalive: int = 60,
                      properties: Properties | None = None, will: tuple | None = None):
        """Connect; return (flags, reason code, CONNACK properties)."""
        if will is not None:
            topic, payload, qos, retain, will_props = will
            self.client.will_set(topic, payload, qos, retain, properties=will_props)

        def run():
            self.client.connect(self.host, self.port, keepalive,
                                clean_start=clean_start, properties=properties)
            self.client.loop_start()
            return self.connacks.get(timeout=WAIT)

        return await trio.to_thread.run_sync(run)

    async def subscribe(self, topic: str, qos: int = 0, *, no_local: bool = False,
                        retain_as_published: bool = False, retain_handling: int = 0,
                        identifier: int | None = None):
        """Subscribe; return the SUBACK's reason codes."""
        options = SubscribeOptions(qos=qos, noLocal=no_local,
                                   retainAsPublished=retain_as_published,
                                   retainHandling=retain_handling)
        p = props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=identifier) if identifier \
            else None
        self.client.subscribe(topic, options=options, properties=p)
        return await trio.to_thread.run_sync(lambda: self.subacks.get(timeout=WAIT))

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                      properties: Properties | None = None):
        """Publish; for QoS 1/2 return the acknowledgement's (reason code, properties)."""
        info = self.client.publish(topic, payload, qos, retain, properties=properties)
        if qos == 0:
            return None

        def wait():
            with self._acked:
                self._acked.wait_for(lambda: info.mid in self.acks, timeout=WAIT)
                return self.acks.get(info.mid)

        return await trio.to_thread.run_sync(wait)

    async def message(self, timeout: float = WAIT):
        return await trio.to_thread.run_sync(lambda: self.messages.get(timeout=timeout))

    async def disconnected(self, timeout: float = WAIT):
        """The (reason code, properties) of the connection's end (the server's DISCONNECT)."""
        return await trio.to_thread.run_sync(lambda: self.disconnects.get(timeout=timeout))

    async def close(self, graceful: bool = True, properties: Properties | None = None,
                    reason_code: Any = None) -> None:
        def run():
            if graceful:
                kw = {"properties": properties} if properties is not None else {}
                if reason_code is not None:
                    kw["reasoncode"] = reason_code
                self.client.disconnect(**kw)
            else:
                sock = self.client.socket()
                if sock is not None:
                    sock.close()
            self.client.loop_stop()

        await trio.to_thread.run_sync(run)
