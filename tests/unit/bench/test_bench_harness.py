"""The benchmark harness cannot rot: a tiny real run, and its parts checked on their own.

No timing is asserted anywhere here: only that the harness runs, measures the real servers
and writes well-formed results and a docs section.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import mqttwire
from bench.report import HEADING, render, update_doc
from bench.results import SCHEMA, Row, check_document

REPO = Path(__file__).resolve().parents[3]
MOSQUITTO = "/usr/sbin/mosquitto"


def _run_bench(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", "--out", str(out), *args],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )


def _results(out: Path) -> dict[tuple[str, str, str], dict]:
    [result] = list(out.glob("*-quick.json"))
    doc = json.loads(result.read_text())
    assert check_document(doc) == []
    assert doc["schema"] == SCHEMA and doc["quick"] is True
    return {(r["figure"], r["system"], r["case"]): r for r in doc["rows"]}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_quick_ca_figure_compares_fleet_ca_with_an_openssl_loop(tmp_path: Path) -> None:
    proc = _run_bench(tmp_path, "--quick", "--runs", "1", "--only", "6", "--no-doc")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    rows = _results(tmp_path)
    [openssl] = [r for (fig, system, _), r in rows.items() if system == "openssl shell loop"]
    assert [run["bundles"] for run in openssl["runs"]] == [3]
    [fleet_ca] = [r for (fig, system, _), r in rows.items() if system == "fleet-ca"]
    # fleet-ca is measured when it works; otherwise the row must say why
    assert fleet_ca["unavailable"] or [run["bundles"] for run in fleet_ca["runs"]] == [5]
    assert {fig for fig, _, _ in rows} == {"6"}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/lib/postgresql").exists(),
                    reason="needs PostgreSQL (Debian package postgresql)")
def test_quick_cluster_figure_measures_every_case(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--out", str(tmp_path), "--quick", "--runs", "1",
         "--only", "8", "--no-doc"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = _results(tmp_path)
    assert {fig for fig, _, _ in rows} == {"8"}
    assert len(rows) == 12
    for (_, system, case), row in rows.items():
        assert not row["unavailable"], (system, case, row["unavailable"])
        assert row["value"] is not None, (system, case)
    stored = [r for (_, _, case), r in rows.items() if case.startswith("QoS 1")]
    assert len(stored) == 3 and all(r["runs"][0]["lost"] == 0 for r in stored)
    [failover] = [r for (_, _, case), r in rows.items() if case.startswith("failover")]
    assert failover["runs"][0]["lost"] == 0
    controls = [r for (_, _, case), r in rows.items() if case.startswith("control latency")]
    assert len(controls) == 4  # across nodes and on one node, p50 and p99
    assert controls[0]["runs"][0]["device_online_across"] is True  # the registry knew


@pytest.mark.skipif(not Path(MOSQUITTO).exists() or shutil.which("openssl") is None,
                    reason="needs the mosquitto binary (Debian package mosquitto) and openssl")
def test_quick_broker_figures_against_mosquitto_write_well_formed_results(
        tmp_path: Path) -> None:
    proc = _run_bench(tmp_path, "--quick", "--runs", "1", "--only", "1", "2", "3", "5",
                      "--systems", "mosquitto", "pipeline", "trio-floor", "--no-doc")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    rows = _results(tmp_path)
    assert {system for _, system, _ in rows} == {
        "mosquitto", "pipeline (mosquitto + paho + SQLite)", "trio-floor"}  # --systems honoured
    # The floor (a bare trio server on fleetgate's TLS context) connects, resumes and idles.
    floor = rows[("1", "trio-floor", "reconnect storm, 10 devices at once")]["runs"][0]
    assert floor["ok"] == 10 and floor["resumed"] == 10
    [idle] = rows[("5", "trio-floor", "10 idle connections")]["runs"]
    assert idle["connections"] == 10 and idle["failed"] == 0

    connects = rows[("1", "mosquitto", "TLS 1.3")]["runs"][0]
    assert connects["ok"] == 10 and connects["failed"] == 0
    storm = rows[("1", "mosquitto", "reconnect storm, 10 devices at once")]["runs"][0]
    assert storm["ok"] == 10 and storm["storm_s"] is not None
    assert storm["resumed"] == 10  # every device offered the session it got before; all resumed

    for case in ("QoS 0, 2 clients", "QoS 1, 2 clients"):
        [run] = rows[("2", "mosquitto", case)]["runs"]
        assert run["failed"] == 0, run["errors"]
        assert run["ok"] == run["sent"] > 0  # every message sent was acknowledged
        assert run["server_cpu_s"] >= 0 and run["value"] > 0

    # mosquitto with an unlimited queue hands every message to the writer
    [stored] = [r for (fig, _, _), r in rows.items() if fig == "3"][0]["runs"]
    assert stored["stored"] == stored["acked"] > 0 and stored["lost"] == 0

    [idle] = rows[("5", "mosquitto", "10 idle connections")]["runs"]
    assert idle["connections"] == 10 and idle["rss_after_kib"] > 0


def test_bad_arguments_exit_2_with_one_usage_error(tmp_path: Path) -> None:
    proc = _run_bench(tmp_path, "--runs", "0")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "--runs must be at least 1" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_ack_counter_counts_acknowledgements_split_anywhere() -> None:
    stream = (bytes([0x20, 2, 0, 0])  # CONNACK accepted
              + b"".join(bytes([0x40, 2, i >> 8, i & 0xFF]) for i in range(1, 301))
              + bytes([0xD0, 0]))  # PINGRESP
    for cut in (1, 3, 7, len(stream) // 2):
        counter = mqttwire.AckCounter()
        for i in range(0, len(stream), cut):
            counter.feed(stream[i:i + cut])
        assert counter.count(mqttwire.PacketType.PUBACK) == 300
        assert counter.count(mqttwire.PacketType.PINGRESP) == 1
        assert counter.connack_codes == [0]
        assert not counter.buffer


def test_ack_counter_counts_runs_of_pubacks_around_other_packets() -> None:
    pubacks = b"".join(bytes([0x40, 2, 0, i]) for i in range(1, 101))
    counter = mqttwire.AckCounter()
    counter.feed(pubacks + bytes([0xD0, 0]) + pubacks + bytes([0x40, 2]))  # a PUBACK cut short
    assert counter.count(mqttwire.PacketType.PUBACK) == 200
    assert counter.count(mqttwire.PacketType.PINGRESP) == 1
    counter.feed(bytes([0, 7]) + pubacks)
    assert counter.count(mqttwire.PacketType.PUBACK) == 301
    assert not counter.buffer


def test_publish_blocks_never_reuse_a_packet_id_within_the_cycle() -> None:
    blocks = mqttwire.publish_blocks("t", b"x" * 100, qos=1, block=5, blocks=4)
    ids = []
    for block in blocks:
        pos = 0
        while pos < len(block):
            assert block[pos] == 0x32  # PUBLISH, QoS 1
            length = block[pos + 1]
            ids.append(int.from_bytes(block[pos + 5:pos + 7], "big"))  # after topic "t"
            pos += 2 + length
    assert ids == list(range(1, 21))


def _doc(rows: list[Row]) -> dict:
    machine = {k: "x" for k in ("cpu_model", "cores", "pinning", "memory_gib", "kernel",
                                "openssl", "python", "mosquitto", "amqtt", "certificates",
                                "loadavg_before", "loadavg_after")}
    return {"schema": SCHEMA, "command": "python -m bench", "runs": 3, "started": "s",
            "finished": "f", "machine": machine, "rows": [r.as_dict() for r in rows]}


def test_report_gives_ratios_and_says_why_a_system_is_missing(tmp_path: Path) -> None:
    ours = Row("1", "TLS 1.3", "fleetgate", "connects/s")
    theirs = Row("1", "TLS 1.3", "mosquitto", "connects/s")
    for v in (100.0, 300.0, 200.0):
        ours.add(value=v, per_cpu_s=v)
        theirs.add(value=v / 2, per_cpu_s=v * 2)
    missing = Row("3", "stored", "fleetgate", "reports/s", unavailable="not yet available "
                  "(needs a store)")
    doc = _doc([ours, theirs, missing])
    assert check_document(doc) == []
    text = render(doc, "bench/results/x.json")
    assert text.startswith(HEADING + "\n")
    assert "| TLS 1.3 | mosquitto | 100 (50.0 to 150) | 400 (200 to 600) | 2.00x, 0.50x |" in text
    assert "not yet available (needs a store)" in text


def test_docs_update_replaces_only_its_own_section(tmp_path: Path) -> None:
    doc_path = tmp_path / "benchmarks.md"
    doc_path.write_text("# Benchmarks\n\n## Side by side\n\nold table\n\n## MQTT codec\n\n"
                        "codec figures\n")
    update_doc(doc_path, "## Side by side\n\nnew table\n")
    text = doc_path.read_text()
    assert "old table" not in text and "new table" in text
    assert text.endswith("## MQTT codec\n\ncodec figures\n")
    update_doc(tmp_path / "fresh.md", "## Side by side\n\nt\n")
    assert (tmp_path / "fresh.md").read_text() == "# Benchmarks\n\n## Side by side\n\nt\n"


def test_check_document_refuses_rows_without_numbers_or_reasons() -> None:
    doc = _doc([Row("2", "QoS 1", "amqtt", "publishes/s")])
    assert check_document(doc) == ["row 0 (2/QoS 1/amqtt): no runs and no reason"]
