"""One network's flood never holds another network's acknowledgements: paho devices over real
TLS, the real gateway, ingest and a SQLite file.

Ordering, not timing: rows in `state_log` are numbered in commit order, so where the healthy
network's reading sits among the flood's rows tells which batch took it.
"""

from __future__ import annotations

import io
import json
import sqlite3
from contextlib import asynccontextmanager

import trio
from gwhelpers import WAIT, LogRecords, PahoClient, Running

from gateway.app import Gateway
from gateway.config import load_config
from gateway.ingest import Ingest
from gateway.logs import EventLog
from gateway.server import serve_mqtt
from gateway.storage import DB_NAME, open_sqlite_store

MODEL = json.dumps({"devices": [{"name": "thermo", "values": [
    {"name": "temp", "permission": "r", "number": {"min": -40, "max": 125}}]}]}).encode()
BATCH = json.dumps({"reports": [{"data": i % 100} for i in range(1000)]}).encode()
FLOOD = 300  # QoS 0 publishes of 1,000 readings


@asynccontextmanager
async def gateway_with_store(pki, data_dir, **overrides):
    async with open_sqlite_store(data_dir) as store:
        config = load_config(None, {"ca_home": pki.path, "mqtt": "127.0.0.1:0", **overrides})
        logs = LogRecords()
        log = EventLog(io.StringIO(), truncate_ips=True)
        log.add_listener(logs)
        gateway = Gateway(config, log=log, ingest=Ingest(store))
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(serve_mqtt, gateway)
            yield Running(gateway, host, port, logs), store
            nursery.cancel_scope.cancel()


async def declared(running, creds, client_id) -> PahoClient:
    device = PahoClient(running, creds, client_id)
    _, rc = await device.connect()
    assert not rc.is_failure
    await device.publish("model", MODEL, qos=1)  # PUBACK: the declaration is committed
    return device


def rows_of(data_dir, network: str) -> list[int]:
    conn = sqlite3.connect(data_dir / DB_NAME)
    try:
        return [i for (i,) in conn.execute(
            "SELECT l.id FROM state_log l JOIN states s ON s.id = l.state_id "
            "JOIN networks n ON n.id = s.network_id WHERE n.uuid = ? ORDER BY l.id",
            (network,))]
    finally:
        conn.close()


async def test_a_qos1_report_is_acknowledged_during_another_networks_qos0_batch_flood(
        pki, net_a, net_b, tmp_path):
    # The writer's queues, not the rate limits, are what this is about: rates out of the way.
    async with gateway_with_store(
            pki, tmp_path, max_queued_operations_per_network=8,
            max_readings_per_second_per_network=1e9, readings_burst_per_network=10**9,
            byte_rate=1e9, byte_burst=10**9) as (running, store):
        flooder = await declared(running, net_a, "flooder")
        healthy = await declared(running, net_b, "healthy")
        try:
            for _ in range(FLOOD):
                flooder.client.publish("report/thermo/temp", BATCH, 0)
            with trio.fail_after(WAIT):  # no event for "a queue is full": look at it
                while store.statistics().waits_network_full == 0:
                    await trio.sleep(0.01)
            # The flooder's connection now waits for room in its own network's queue.
            await healthy.publish("report/thermo/temp", b"21", qos=1)  # returns on PUBACK
            (mine,) = rows_of(tmp_path, net_b.network)
            # A QoS 1 publish of the flooder comes after its whole flood: nothing was lost.
            await flooder.publish("report/thermo/temp", b"1", qos=1)
            flood_rows = rows_of(tmp_path, net_a.network)
            assert len(flood_rows) == FLOOD * 1000 + 1
            # The healthy reading was committed ahead of flood batches the flooder had sent
            # before it (one FIFO queue put it behind every reading already read).
            assert sum(1 for i in flood_rows if i > mine) > 1000
        finally:
            await flooder.close()
            await healthy.close()


async def test_a_network_over_its_readings_rate_is_slowed_with_one_log_line(
        pki, net_a, tmp_path):
    async with gateway_with_store(pki, tmp_path, max_readings_per_second_per_network=100.0,
                                  readings_burst_per_network=500) as (running, _store):
        device = await declared(running, net_a, "fast")
        try:
            await device.publish("report/thermo/temp", BATCH, qos=1)  # 1,000: 500 over
            line = await running.logs.wait("readings_throttled")
            assert line["network"] == net_a.network
            assert line["limit"] == "max_readings_per_second_per_network"
            assert 4 < line["delay"] <= 5  # the debt (500 readings at 100/s), not a timing
            mqtt = running.gateway.metrics.mqtt
            assert mqtt.readings_throttled.value == 1 and mqtt.throttle_pauses.value == 1
            assert running.gateway.statistics()["readings_rate"]["throttled"] == 1
        finally:
            await device.close(graceful=False)
