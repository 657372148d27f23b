"""The few MQTT 3.1.1 packets the load generator needs, encoded ahead of time.

Deliberately separate from ``gateway.mqtt``: the bench measures the gateway from outside, so it
must not share the gateway's codec (a codec bug would then hide itself). Only what a publisher
sends (CONNECT, PUBLISH, SUBSCRIBE, PINGREQ, DISCONNECT, MQTT 3.1.1 section 3) and a counter for
what comes back (CONNACK, PUBACK, SUBACK, PINGRESP) live here.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field


class PacketType(enum.IntEnum):
    """Control packet types (MQTT 3.1.1 section 2.2.1)."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    SUBSCRIBE = 8
    SUBACK = 9
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14


def _remaining_length(n: int) -> bytes:
    """Variable-length integer of section 2.2.3."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("!H", len(raw)) + raw


def connect(client_id: str, *, keepalive: int = 60, clean_session: bool = True) -> bytes:
    """A CONNECT packet with protocol level 4 and no credentials (identity is the certificate)."""
    flags = 0x02 if clean_session else 0x00
    body = _utf8("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + _utf8(client_id)
    return bytes([PacketType.CONNECT << 4]) + _remaining_length(len(body)) + body


def publish(topic: str, payload: bytes, *, qos: int = 0, packet_id: int = 0) -> bytes:
    """A PUBLISH packet; ``packet_id`` is used only when ``qos`` > 0."""
    body = _utf8(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return bytes([(PacketType.PUBLISH << 4) | (qos << 1)]) + _remaining_length(len(body)) + body


def subscribe(topic_filter: str, *, qos: int = 1, packet_id: int = 1) -> bytes:
    """A SUBSCRIBE packet with one topic filter."""
    body = struct.pack("!H", packet_id) + _utf8(topic_filter) + bytes([qos])
    return bytes([(PacketType.SUBSCRIBE << 4) | 0x02]) + _remaining_length(len(body)) + body


PINGREQ = bytes([PacketType.PINGREQ << 4, 0])
DISCONNECT = bytes([PacketType.DISCONNECT << 4, 0])


def publish_blocks(
    topic: str, payload: bytes, *, qos: int, block: int, blocks: int
) -> list[bytes]:
    """``blocks`` byte strings of ``block`` PUBLISH packets each, ready to write in one call.

    For QoS 1 the packet ids run 1 .. block*blocks across the blocks, so a sender that cycles
    through them with fewer than block*(blocks-1) messages in flight never reuses a live id.
    """
    out = []
    for b in range(blocks):
        out.append(
            b"".join(
                publish(topic, payload, qos=qos, packet_id=(b * block + i + 1) if qos else 0)
                for i in range(block)
            )
        )
    return out


_FAST_MAX = 1 << 16
_PUBACK_FIRST = bytes([PacketType.PUBACK << 4]) * _FAST_MAX
_PUBACK_SECOND = bytes([2]) * _FAST_MAX


@dataclass(slots=True)
class AckCounter:
    """Counts the packets a server sends back, fed with whatever bytes arrived.

    ``connack_codes`` keeps every CONNACK return code; the other types are counted in ``counts``.
    """

    buffer: bytearray = field(default_factory=bytearray)
    counts: dict[int, int] = field(default_factory=dict)
    connack_codes: list[int] = field(default_factory=list)

    def feed(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        pos, end = 0, len(buf)
        counts = self.counts
        # Fast path for a pipelined QoS 1 publisher: a run of 4-byte PUBACKs is checked and
        # counted with slices (C speed) instead of one Python iteration per packet.
        n = min(end // 4, _FAST_MAX)
        if n and buf[0] == 0x40:
            whole = buf[: 4 * n]
            if whole[0::4] == _PUBACK_FIRST[:n] and whole[1::4] == _PUBACK_SECOND[:n]:
                counts[PacketType.PUBACK] = counts.get(PacketType.PUBACK, 0) + n
                pos = 4 * n
        while pos + 2 <= end:
            first = buf[pos]
            # Every acknowledgement we expect has a remaining length below 128: one byte.
            length = buf[pos + 1]
            header = 2
            if length & 0x80:
                length, mult, i = 0, 1, pos + 1
                while True:
                    if i >= end:
                        del buf[:pos]
                        return
                    byte = buf[i]
                    length += (byte & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not byte & 0x80:
                        break
                header = i - pos
            if pos + header + length > end:
                break
            kind = first >> 4
            if kind == PacketType.CONNACK:
                self.connack_codes.append(buf[pos + header + 1])
            counts[kind] = counts.get(kind, 0) + 1
            pos += header + length
        del buf[:pos]

    def count(self, kind: PacketType) -> int:
        return self.counts.get(kind, 0)
