"""Probing clients for the attack matrix: a synchronous paho client with waits on what it
received (`Probe`), and a hand-made TLS + CONNECT (`raw_connect`) that keeps the exact reason
a connection was refused (paho reports a TLS 1.3 post-handshake alert only as "lost")."""

from __future__ import annotations

import json
import queue
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from .errors import GatewayError

WAIT = 10.0  # seconds to wait for an answer the gateway owes us


# -- a synchronous paho client for probing -----------------------------------------------


class Probe:
    """One paho client in its own network thread, with waits on what it received."""

    def __init__(self, host: str, port: int, *, ca: Path, cert: Path | None = None,
                 key: Path | None = None, client_id: str = "", username: str | None = None,
                 clean_session: bool = True) -> None:
        self.host, self.port = host, port
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=clean_session, protocol=paho.MQTTv311)
        self.client.tls_set(ca_certs=str(ca), certfile=str(cert) if cert else None,
                            keyfile=str(key) if key else None, cert_reqs=ssl.CERT_REQUIRED)
        if username is not None:
            self.client.username_pw_set(username, "password")
        self.messages: list[paho.MQTTMessage] = []
        self.connack: queue.Queue[Any] = queue.Queue()
        self.subacks: queue.Queue[list[Any]] = queue.Queue()
        self.disconnected = threading.Event()
        self.disconnect_reason = ""
        self.log_errors: list[str] = []
        self._cond = threading.Condition()
        self.client.on_connect = lambda c, u, f, rc, p: self.connack.put(rc)
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.subacks.put(codes)
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.client.on_log = self._on_log

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.disconnect_reason = str(rc)
        self.disconnected.set()
        with self._cond:
            self._cond.notify_all()
            self.connack.put(None)

    def _on_log(self, _c: Any, _u: Any, level: int, text: str) -> None:
        if level == paho.MQTT_LOG_ERR or "failed" in text.lower():
            self.log_errors.append(text)

    def connect(self) -> tuple[bool, str]:
        """(admitted, what happened): admitted only on CONNACK 0."""
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except ssl.SSLError as exc:
            return False, f"TLS handshake failed: {exc.reason or exc}"
        except OSError as exc:
            raise GatewayError(f"cannot reach the gateway at {self.host}:{self.port}: "
                               f"{exc.strerror or exc}") from None
        self.client.loop_start()
        try:
            rc = self.connack.get(timeout=WAIT)
        except queue.Empty:
            return False, f"no CONNACK within {WAIT:.0f} s"
        if rc is None:
            detail = self.log_errors[-1] if self.log_errors else self.disconnect_reason
            return False, f"closed before CONNACK ({shorten(detail)})"
        if rc.is_failure:
            return False, f"CONNACK refused: {rc}"
        return True, "CONNACK 0 (accepted)"

    def subscribe(self, topic: str) -> str:
        """The SUBACK's answer as text: 'granted QoS n', 'failure (0x80)', or 'closed'."""
        self.client.subscribe(topic, 1)
        try:
            codes = self.subacks.get(timeout=WAIT)
        except queue.Empty:
            return "closed" if self.disconnected.is_set() else "no SUBACK"
        code = codes[0]
        value = code.value if hasattr(code, "value") else int(code)
        return "failure (0x80)" if value >= 0x80 else f"granted QoS {value}"

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> str:
        """'acknowledged', 'closed' (the gateway cut us off) or 'not acknowledged'."""
        try:
            info = self.client.publish(topic, payload, qos=1, retain=retain)
        except ValueError as exc:  # paho refuses some topics itself
            return f"client refused: {exc}"
        info.wait_for_publish(WAIT)
        if info.is_published():
            return "acknowledged"
        return "closed" if self.disconnected.is_set() else "not acknowledged"

    def wait_for(self, pred: Callable[[paho.MQTTMessage], bool]) -> bool:
        """Wait until a message matching `pred` arrives (True) or the link drops (False)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: any(pred(m) for m in self.messages) or self.disconnected.is_set(),
                timeout=WAIT) and any(pred(m) for m in self.messages)

    def close(self) -> None:
        if not self.disconnected.is_set():
            self.client.disconnect()
        self.client.loop_stop()


# MQTT 3.1.1 CONNECT: protocol "MQTT" level 4, clean session, keepalive 30, empty client id.
_CONNECT = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 0x02, 0, 30, 0, 0])


def raw_connect(host: str, port: int, *, ca: Path, cert: Path | None,
                key: Path | None) -> tuple[bool, str]:
    """One TLS connection and one CONNECT by hand, to name exactly where it was refused.

    paho reports a TLS 1.3 post-handshake alert only as "connection lost"; here the alert
    (e.g. `TLSV13_ALERT_CERTIFICATE_REQUIRED`) or the CONNACK return code is kept.
    Returns (admitted, what happened): admitted only on CONNACK 0.
    """
    import socket

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    ctx.check_hostname = False  # we probe the client side; the server is who we dialled
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    try:
        with socket.create_connection((host, port), timeout=WAIT) as tcp, \
                ctx.wrap_socket(tcp) as tls:
            tls.sendall(_CONNECT)
            answer = b""
            while len(answer) < 4:
                chunk = tls.recv(4 - len(answer))
                if not chunk:
                    break
                answer += chunk
    except ssl.SSLError as exc:
        return False, f"TLS: {exc.reason or exc}"
    except TimeoutError:
        return False, f"no answer within {WAIT:.0f} s"
    except OSError as exc:
        if isinstance(exc, ConnectionRefusedError):
            raise GatewayError(f"cannot reach the gateway at {host}:{port}") from None
        return False, f"connection closed ({exc.strerror or exc})"
    if len(answer) == 4 and answer[0] == 0x20:
        if answer[3] == 0:
            return True, "CONNACK 0 (accepted)"
        return False, f"CONNACK refused (return code {answer[3]})"
    return False, "closed before CONNACK" if not answer else f"odd answer {answer.hex()}"


def json_object(payload: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def shorten(text: str, limit: int = 70) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
