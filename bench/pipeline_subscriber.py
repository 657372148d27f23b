"""The do-it-yourself pipeline's writer: a paho subscriber that stores every message in SQLite.

What a team without fleetgate would build: mosquitto in front, this process behind it,
subscribed to ``bench/#`` at QoS 1 with a persistent session, writing rows in batches (one
transaction and one fsync per batch: WAL, synchronous=FULL) with the (topic, time) index a
history query needs. paho acknowledges each message to mosquitto when it arrives, before it is
committed, as such pipelines do.

Usage: pipeline_subscriber.py HOST PORT ROOT CERT KEY DB. Prints ``ready`` once subscribed;
SIGTERM commits what it holds and exits 0.
"""

from __future__ import annotations

import signal
import sqlite3
import sys
import time

import paho.mqtt.client as mqtt

BATCH = 1000
MAX_DELAY = 0.2  # seconds a received message may wait for its batch


def main(argv: list[str]) -> int:
    host, port, root, cert, key, db_path = argv
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS reports (id INTEGER PRIMARY KEY, topic TEXT NOT NULL,"
               " payload BLOB NOT NULL, received_at REAL NOT NULL)")
    db.execute("CREATE INDEX IF NOT EXISTS reports_topic_time ON reports (topic, received_at)")
    pending: list[tuple[str, bytes, float]] = []
    subscribed = False
    stopping = False

    def flush() -> None:
        if pending:
            db.execute("BEGIN")
            db.executemany("INSERT INTO reports (topic, payload, received_at) VALUES (?, ?, ?)",
                           pending)
            db.execute("COMMIT")
            pending.clear()

    def on_message(_c, _u, msg) -> None:  # noqa: ANN001
        pending.append((msg.topic, msg.payload, time.time()))

    def on_subscribe(*_args) -> None:  # noqa: ANN002
        nonlocal subscribed
        subscribed = True
        print("ready", flush=True)

    def on_connect(client, _u, _f, rc, _p=None) -> None:  # noqa: ANN001
        client.subscribe("bench/#", qos=1)

    def stop(*_args) -> None:  # noqa: ANN002
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pipeline-writer",
                         clean_session=False)
    client.tls_set(ca_certs=root, certfile=cert, keyfile=key)
    client.on_message, client.on_subscribe, client.on_connect = on_message, on_subscribe, on_connect
    client.max_inflight_messages_set(20)
    client.connect(host, int(port), keepalive=60)
    last_flush = time.monotonic()
    while not stopping:
        client.loop(timeout=0.05)
        now = time.monotonic()
        if len(pending) >= BATCH or (pending and now - last_flush >= MAX_DELAY):
            flush()
            last_flush = now
    flush()
    client.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
