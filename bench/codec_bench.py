"""Throughput of the MQTT 3.1.1 and 5.0 codec (gateway.mqtt.codec), on one core, in packets/s.

A standalone script (not part of `python -m bench`, never part of the tests' pass/fail):

  .venv/bin/python bench/codec_bench.py                  # full sizes, best of 5 runs
  .venv/bin/python bench/codec_bench.py --count 2000 --repeat 1   # smoke run

What it measures, each from a buffer built before the clock starts:
  decode-qos0-one-buffer   N small QoS 0 PUBLISH (17-byte topic, 4-byte payload) fed as one
                           buffer, then drained with next_packet(): the issue's target figure
  decode-qos0-4k-chunks    the same stream fed in 4 KiB pieces, as recv() hands it over
  decode-qos1-one-buffer   QoS 1 PUBLISH (a packet identifier each)
  decode-v5-qos1-bare      the same QoS 1 PUBLISH in MQTT 5 form, no properties (one more
                           byte: the property length 0), through a level-5 reader
  decode-v5-qos1-props     MQTT 5 QoS 1 PUBLISH with a typical property set: topic alias,
                           message expiry interval and one user property (23 more bytes),
                           the same list on every message, as a device sends it: a reader
                           decodes a repeated list once (a bounded per-connection cache)
  decode-v5-qos1-fresh     the same, but the user property's value differs on every
                           message: every list is parsed (the cache never hits)
  decode-64k-in-1k-chunks  N/1000 PUBLISH of 64 KiB each fed in 1 KiB pieces (MB/s too): a
                           partial packet is never re-copied per feed, so this stays linear
  encode-puback-batch      N PUBACKs appended to one bytearray with encode_into()
  encode-publish-qos0      N QoS 0 PUBLISH appended to one bytearray
  The v5 / 3.1.1 cost ratios (per-packet time, against decode-qos1-one-buffer) are printed
  last; the goal is at most 1.5.
  framing-floor (peer)     a minimal pure-Python loop over the same one buffer that only
                           frames packets and slices topic and payload into tuples, with no
                           validation and no packet objects: the ceiling for pure Python on
                           this machine, so the ratio shows what validation and typed values
                           cost rather than how fast the machine is.

Exit codes: 0 done; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.mqtt import Properties, PubAck, Publish, QoS  # noqa: E402
from gateway.mqtt.codec import PacketReader, encode, encode_into  # noqa: E402

TOPIC = "sensors/dev1/temp"
PAYLOAD = b"21.5"


def _drain(reader: PacketReader) -> int:
    count = 0
    next_packet = reader.next_packet
    while next_packet() is not None:
        count += 1
    return count


def decode_one_buffer(stream: bytes, expected: int, level: int = 4) -> Callable[[], int]:
    def run() -> int:
        reader = PacketReader(protocol_level=level)
        reader.feed(stream)
        count = _drain(reader)
        assert count == expected, (count, expected)
        return count

    return run


def decode_chunks(stream: bytes, expected: int, size: int) -> Callable[[], int]:
    chunks = [stream[i : i + size] for i in range(0, len(stream), size)]

    def run() -> int:
        reader = PacketReader()
        count = 0
        for chunk in chunks:
            reader.feed(chunk)
            count += _drain(reader)
        assert count == expected, (count, expected)
        return count

    return run


def framing_floor(stream: bytes, expected: int) -> Callable[[], int]:
    def run() -> int:
        out = []
        pos, end = 0, len(stream)
        while pos < end:
            length = stream[pos + 1]  # every packet here has a 1-byte remaining length
            start = pos + 2
            stop = start + length
            topic_end = start + 2 + ((stream[start] << 8) | stream[start + 1])
            out.append((stream[start + 2 : topic_end].decode(), stream[topic_end:stop]))
            pos = stop
        assert len(out) == expected
        return len(out)

    return run


def encode_pubacks(count: int) -> Callable[[], int]:
    acks = [PubAck(i % 65535 + 1) for i in range(count)]

    def run() -> int:
        out = bytearray()
        for ack in acks:
            encode_into(ack, out)
        assert len(out) == 4 * count
        return count

    return run


def encode_publishes(count: int) -> Callable[[], int]:
    packets = [Publish(TOPIC, PAYLOAD)] * count

    def run() -> int:
        out = bytearray()
        for packet in packets:
            encode_into(packet, out)
        return count

    return run


def measure(cases: list[tuple[str, Callable[[], int]]], repeat: int
            ) -> dict[str, tuple[float, float]]:
    """Best and median packets/s of each case over `repeat` rounds. The cases run in
    turn within each round, so a change of machine load touches them all alike and the
    ratios between them stay fair on a shared machine."""
    rates: dict[str, list[float]] = {name: [] for name, _ in cases}
    for _ in range(repeat):
        for name, run in cases:
            start = time.perf_counter()
            count = run()
            rates[name].append(count / (time.perf_counter() - start))
    return {name: (max(r), statistics.median(r)) for name, r in rates.items()}


def machine() -> str:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{platform.python_implementation()} {platform.python_version()} on "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}), "
        f"load average {load}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="codec_bench.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--count", type=int, default=200_000, help="packets per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (best is kept)")
    args = parser.parse_args(argv)
    if args.count < 1 or args.repeat < 1:
        parser.error("--count and --repeat must be at least 1")

    qos0 = encode(Publish(TOPIC, PAYLOAD))
    qos0_stream = qos0 * args.count
    qos1_stream = b"".join(
        encode(Publish(TOPIC, PAYLOAD, QoS.AT_LEAST_ONCE, packet_id=i % 65535 + 1))
        for i in range(args.count)
    )
    typical = Properties(message_expiry_interval=3600, topic_alias=1,
                         user_properties=(("fw", "1.4.2"),))
    v5_streams = {
        name: b"".join(
            encode(Publish(TOPIC, PAYLOAD, QoS.AT_LEAST_ONCE, packet_id=i % 65535 + 1,
                           properties=props), 5)
            for i in range(args.count)
        )
        for name, props in (("bare", Properties()), ("props", typical))
    }
    v5_streams["fresh"] = b"".join(
        encode(Publish(TOPIC, PAYLOAD, QoS.AT_LEAST_ONCE, packet_id=i % 65535 + 1,
                       properties=Properties(message_expiry_interval=3600, topic_alias=1,
                                             user_properties=(("seq", f"{i:06d}"),))), 5)
        for i in range(args.count)
    )
    big_count = max(1, args.count // 1000)
    big = encode(Publish(TOPIC, bytes(65_536), QoS.AT_LEAST_ONCE, packet_id=1))
    big_stream = big * big_count
    cases: list[tuple[str, Callable[[], int]]] = [
        ("decode-qos0-one-buffer", decode_one_buffer(qos0_stream, args.count)),
        ("decode-qos0-4k-chunks", decode_chunks(qos0_stream, args.count, 4096)),
        ("decode-qos1-one-buffer", decode_one_buffer(qos1_stream, args.count)),
        ("decode-v5-qos1-bare", decode_one_buffer(v5_streams["bare"], args.count, 5)),
        ("decode-v5-qos1-props", decode_one_buffer(v5_streams["props"], args.count, 5)),
        ("decode-v5-qos1-fresh", decode_one_buffer(v5_streams["fresh"], args.count, 5)),
        ("decode-64k-in-1k-chunks", decode_chunks(big_stream, big_count, 1024)),
        ("encode-puback-batch", encode_pubacks(args.count)),
        ("encode-publish-qos0", encode_publishes(args.count)),
        ("framing-floor (peer)", framing_floor(qos0_stream, args.count)),
    ]
    print(f"machine: {machine()}")
    print(f"packets per run: {args.count}, runs: {args.repeat}, packet: {len(qos0)} bytes QoS 0")
    results = {}
    for name, (best, median) in measure(cases, args.repeat).items():
        results[name] = best
        line = f"{name:<24} {best:>12,.0f} packets/s best  {median:>12,.0f} median"
        if name.startswith("decode-64k"):
            line += f"  ({best * len(big) / 1e6:,.0f} MB/s best)"
        print(line)
    ratio = results["decode-qos0-one-buffer"] / results["framing-floor (peer)"]
    print(f"decode-qos0-one-buffer / framing-floor = {ratio:.2f}")
    v4 = results["decode-qos1-one-buffer"]
    for case in ("bare", "props", "fresh"):
        cost = v4 / results[f"decode-v5-qos1-{case}"]
        print(f"v5 PUBLISH decode cost / 3.1.1 ({case}) = {cost:.2f}  (goal <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
