"""MQTT 3.1.1 packets to bytes and back (OASIS MQTT 3.1.1, chapters 2 and 3).

Theory of operation. Every control packet is a fixed header (a type/flags byte and a
Remaining Length of 1 to 4 bytes, section 2.2) followed by exactly Remaining Length bytes of
variable header and payload. `PacketReader` keeps the bytes it was fed in one bytearray with
a read offset: a packet is decoded only once all of its bytes are there, from a memoryview
slice of exactly its body, and the consumed prefix is dropped only when it is more than half
the buffer (or all of it), so feeding a stream costs linear time whatever the chunking.

The size limit is checked as soon as the fixed header is complete, before any of the body
is kept waiting: a header announcing 256 MB is refused at once (`PacketTooLarge`).

The reader decodes all 14 packet types in both directions and enforces what the standard
says of a packet in isolation: fixed-header flags (2.2.2), QoS and DUP (3.3.1), non-zero
packet identifiers (2.3.1), UTF-8 strings (1.5.3), topic names and filters (4.7), CONNECT's
protocol name, level and flags (3.1.2), and that the fields fill the Remaining Length
exactly. What depends on the connection's state (which packets a server may receive, client
identifier policy) is the session's job. A violation raises `RemoteProtocolError` with the
normative statement in `rule`; the reader then stays failed: every later call raises it.

`encode` and `encode_into` (defined in `encoder`, re-exported here so that one module is the
codec's public face) refuse with `LocalProtocolError` any packet the reader would refuse.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TypeVar

from .encoder import encode, encode_into
from .errors import PacketTooLarge, RemoteProtocolError
from .packets import (
    PROTOCOL_LEVEL_3_1_1,
    SUBACK_FAILURE,
    ConnAck,
    Connect,
    ConnectReturnCode,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    QoS,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    Will,
)
from .topics import validate_topic_filter, validate_topic_name
from .wire import (
    MAX_REMAINING_LENGTH,
    decode_binary,
    decode_remaining_length,
    decode_u8,
    decode_u16,
    decode_utf8,
)

DEFAULT_MAX_PACKET_SIZE = 256 * 1024
_T = TypeVar("_T")

_QOS = (QoS.AT_MOST_ONCE, QoS.AT_LEAST_ONCE, QoS.EXACTLY_ONCE)


def _publish_shadow() -> type | None:
    """A plain slotted class with Publish's exact layout, or None if that cannot be had.

    Why: a frozen dataclass's __init__ sets each field through object.__setattr__, which
    costs about a microsecond per PUBLISH, half the decoding budget. The hot path fills a
    shadow instance with plain attribute stores, then gives it Publish's class: the result
    is an ordinary, frozen, equal and hashable Publish (a test proves it). Should Publish's
    fields ever change, this returns None and the hot path calls Publish() instead.
    """
    names = tuple(f.name for f in dataclasses.fields(Publish))
    if names != ("topic", "payload", "qos", "retain", "dup", "packet_id"):
        return None
    if getattr(Publish, "__slots__", None) != names:
        return None
    shadow = type("_PublishShadow", (), {"__slots__": names})
    try:
        probe = object.__new__(shadow)
        probe.__class__ = Publish
    except TypeError:
        return None
    return shadow


_PublishShadow = _publish_shadow()
_new_object = object.__new__
_RETURN_CODES = tuple(ConnectReturnCode)
_VALID_SUBACK_CODES = frozenset((0, 1, 2, SUBACK_FAILURE))
_PINGREQ = PingReq()
_PINGRESP = PingResp()
_DISCONNECT = Disconnect()

# Fixed-header flags every type but PUBLISH must carry (section 2.2.2, table 2.2), and the
# normative statement that names the check where the standard has a specific one.
_REQUIRED_FLAGS = {
    PacketType.CONNECT: 0,
    PacketType.CONNACK: 0,
    PacketType.PUBACK: 0,
    PacketType.PUBREC: 0,
    PacketType.PUBREL: 0b0010,
    PacketType.PUBCOMP: 0,
    PacketType.SUBSCRIBE: 0b0010,
    PacketType.SUBACK: 0,
    PacketType.UNSUBSCRIBE: 0b0010,
    PacketType.UNSUBACK: 0,
    PacketType.PINGREQ: 0,
    PacketType.PINGRESP: 0,
    PacketType.DISCONNECT: 0,
}
_FLAG_RULES = {
    PacketType.PUBREL: "MQTT-3.6.1-1",
    PacketType.SUBSCRIBE: "MQTT-3.8.1-1",
    PacketType.UNSUBSCRIBE: "MQTT-3.10.1-1",
    PacketType.DISCONNECT: "MQTT-3.14.1-1",
}
# Indexed by the whole first byte: None where type and flags are legal (or PUBLISH, whose
# flags carry meaning and are checked when decoding), else the error to raise.
_FIRST_BYTE_ERRORS: list[tuple[str, str | None] | None] = []
for _byte in range(256):
    _type, _flags = _byte >> 4, _byte & 0x0F
    if _type in (0, 15):
        _FIRST_BYTE_ERRORS.append((f"reserved control packet type {_type} (section 2.2.1)", None))
    elif _type == PacketType.PUBLISH or _flags == _REQUIRED_FLAGS[PacketType(_type)]:
        _FIRST_BYTE_ERRORS.append(None)
    else:
        _FIRST_BYTE_ERRORS.append(
            (
                f"{PacketType(_type).name} with fixed-header flags {_flags:04b}, "
                f"not {_REQUIRED_FLAGS[PacketType(_type)]:04b} (section 2.2.2)",
                _FLAG_RULES.get(PacketType(_type), "MQTT-2.2.2-2"),
            )
        )
del _byte, _type, _flags


# --------------------------------------------------------------------------- decoding


def _packet_id(body: memoryview, offset: int, what: str) -> tuple[int, int]:
    packet_id, offset = decode_u16(body, offset)
    if packet_id == 0:
        raise RemoteProtocolError(f"{what} with packet identifier 0", rule="MQTT-2.3.1-1")
    return packet_id, offset


def _expect_end(body: memoryview, offset: int, what: str) -> None:
    if offset != len(body):
        raise RemoteProtocolError(
            f"{what}: remaining length {len(body)} but its fields end at byte {offset}"
        )


def _field(
    decoder: Callable[[memoryview, int], tuple[_T, int]], body: memoryview, i: int, rule: str
) -> tuple[_T, int]:
    """Decode a CONNECT payload field whose absence breaks `rule` (truncation has no rule
    of its own; ill-formed UTF-8 keeps its MQTT-1.5.3 rule)."""
    try:
        return decoder(body, i)
    except RemoteProtocolError as exc:
        if exc.rule is None:
            exc.rule = rule
        raise


def _decode_connect(flags: int, body: memoryview) -> Connect:
    # Section 3.1.2: protocol name, level, connect flags, keep alive; 3.1.3: the payload.
    protocol_name, i = decode_utf8(body, 0)
    if protocol_name != "MQTT":
        raise RemoteProtocolError(
            f"CONNECT protocol name {protocol_name!r} is not 'MQTT'", rule="MQTT-3.1.2-1"
        )
    level, i = decode_u8(body, i)
    if level != PROTOCOL_LEVEL_3_1_1:
        raise RemoteProtocolError(
            f"unsupported protocol level {level}",
            rule="MQTT-3.1.2-2",
            connack_code=ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION,
        )
    cflags, i = decode_u8(body, i)
    if cflags & 0x01:
        raise RemoteProtocolError("CONNECT reserved flag is set", rule="MQTT-3.1.2-3")
    will_flag = cflags & 0x04
    will_qos = (cflags >> 3) & 0x03
    will_retain = bool(cflags & 0x20)
    if will_flag:
        if will_qos == 3:
            raise RemoteProtocolError("CONNECT will QoS is 3", rule="MQTT-3.1.2-14")
    else:
        if will_qos:
            raise RemoteProtocolError("will QoS set without the will flag", rule="MQTT-3.1.2-13")
        if will_retain:
            raise RemoteProtocolError("will retain set without the will flag", rule="MQTT-3.1.2-15")
    if cflags & 0x40 and not cflags & 0x80:
        raise RemoteProtocolError("password flag set without username flag", rule="MQTT-3.1.2-22")
    keepalive, i = decode_u16(body, i)
    client_id, i = _field(decode_utf8, body, i, "MQTT-3.1.3-3")
    will = None
    if will_flag:
        will_topic, i = _field(decode_utf8, body, i, "MQTT-3.1.2-9")
        validate_topic_name(will_topic)
        will_payload, i = _field(decode_binary, body, i, "MQTT-3.1.2-9")
        will = Will(will_topic, will_payload, _QOS[will_qos], will_retain)
    username = password = None
    if cflags & 0x80:
        username, i = _field(decode_utf8, body, i, "MQTT-3.1.2-19")
    if cflags & 0x40:
        password, i = _field(decode_binary, body, i, "MQTT-3.1.2-21")
    if i != len(body):
        # Trailing bytes sit where the first field after the last one present would be: that
        # field's flag said it is absent (MQTT-3.1.2-11, -18, -20).
        if password is not None:
            rule = None
        elif username is not None:
            rule = "MQTT-3.1.2-20"
        elif will is not None:
            rule = "MQTT-3.1.2-18"
        else:
            rule = "MQTT-3.1.2-11"
        raise RemoteProtocolError(
            f"CONNECT has {len(body) - i} bytes after its last flagged field", rule=rule
        )
    return Connect(
        client_id=client_id,
        clean_session=bool(cflags & 0x02),
        keepalive=keepalive,
        will=will,
        username=username,
        password=password,
    )


def _decode_connack(flags: int, body: memoryview) -> ConnAck:
    # Section 3.2.2: acknowledge flags (bits 7-1 reserved) and a return code.
    if len(body) != 2:
        raise RemoteProtocolError(f"CONNACK remaining length {len(body)}, not 2")
    ack_flags, code = body[0], body[1]
    if ack_flags & 0xFE:
        raise RemoteProtocolError("CONNACK reserved acknowledge flags are set (3.2.2.1)")
    if code >= len(_RETURN_CODES):
        raise RemoteProtocolError(f"CONNACK reserved return code {code} (3.2.2.3)")
    if ack_flags and code:
        raise RemoteProtocolError(
            "CONNACK refuses the connection yet says a session is present", rule="MQTT-3.2.2-4"
        )
    return ConnAck(_RETURN_CODES[code], bool(ack_flags))


def _decode_publish(flags: int, body: memoryview) -> Publish:
    # Section 3.3: DUP, QoS and RETAIN in the fixed header; topic name; packet id if QoS > 0.
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise RemoteProtocolError("PUBLISH with QoS 3", rule="MQTT-3.3.1-4")
    dup = bool(flags & 0x08)
    if dup and not qos:
        raise RemoteProtocolError("PUBLISH with QoS 0 and DUP set", rule="MQTT-3.3.1-2")
    topic, i = decode_utf8(body, 0)
    validate_topic_name(topic)
    packet_id = None
    if qos:
        packet_id, i = _packet_id(body, i, "PUBLISH")
    return Publish(topic, bytes(body[i:]), _QOS[qos], bool(flags & 0x01), dup, packet_id)


def _ack_decoder(cls: type, name: str) -> Callable[[int, memoryview], Packet]:
    def decode(flags: int, body: memoryview) -> Packet:
        if len(body) != 2:
            raise RemoteProtocolError(f"{name} remaining length {len(body)}, not 2")
        packet_id = (body[0] << 8) | body[1]
        if packet_id == 0:
            raise RemoteProtocolError(f"{name} with packet identifier 0", rule="MQTT-2.3.1-1")
        return cls(packet_id)

    decode.__name__ = f"_decode_{name.lower()}"
    return decode


def _decode_subscribe(flags: int, body: memoryview) -> Subscribe:
    # Section 3.8: packet id, then (topic filter, requested QoS) pairs to the end.
    packet_id, i = _packet_id(body, 0, "SUBSCRIBE")
    subscriptions = []
    end = len(body)
    while i < end:
        topic_filter, i = decode_utf8(body, i)
        validate_topic_filter(topic_filter)
        requested, i = decode_u8(body, i)
        if requested > 2:
            raise RemoteProtocolError(
                f"SUBSCRIBE requested QoS byte {requested:#04x}: reserved bits or QoS 3",
                rule="MQTT-3.8.3-4",
            )
        subscriptions.append((topic_filter, _QOS[requested]))
    if not subscriptions:
        raise RemoteProtocolError("SUBSCRIBE without a topic filter", rule="MQTT-3.8.3-3")
    return Subscribe(packet_id, tuple(subscriptions))


def _decode_suback(flags: int, body: memoryview) -> SubAck:
    # Section 3.9: packet id, then one return code per filter subscribed.
    packet_id, i = _packet_id(body, 0, "SUBACK")
    codes = tuple(body[i:])
    if not codes:
        raise RemoteProtocolError("SUBACK without a return code (3.9.3)")
    for code in codes:
        if code not in _VALID_SUBACK_CODES:
            raise RemoteProtocolError(f"SUBACK reserved return code {code}", rule="MQTT-3.9.3-2")
    return SubAck(packet_id, codes)


def _decode_unsubscribe(flags: int, body: memoryview) -> Unsubscribe:
    # Section 3.10: packet id, then topic filters to the end.
    packet_id, i = _packet_id(body, 0, "UNSUBSCRIBE")
    filters = []
    end = len(body)
    while i < end:
        topic_filter, i = decode_utf8(body, i)
        validate_topic_filter(topic_filter)
        filters.append(topic_filter)
    if not filters:
        raise RemoteProtocolError("UNSUBSCRIBE without a topic filter", rule="MQTT-3.10.3-2")
    return Unsubscribe(packet_id, tuple(filters))


def _empty_decoder(packet: Packet, name: str) -> Callable[[int, memoryview], Packet]:
    def decode(flags: int, body: memoryview) -> Packet:
        if len(body):
            raise RemoteProtocolError(f"{name} remaining length {len(body)}, not 0")
        return packet

    decode.__name__ = f"_decode_{name.lower()}"
    return decode


_DECODERS: tuple[Callable[[int, memoryview], Packet] | None, ...] = (
    None,
    _decode_connect,
    _decode_connack,
    _decode_publish,
    _ack_decoder(PubAck, "PUBACK"),
    _ack_decoder(PubRec, "PUBREC"),
    _ack_decoder(PubRel, "PUBREL"),
    _ack_decoder(PubComp, "PUBCOMP"),
    _decode_subscribe,
    _decode_suback,
    _decode_unsubscribe,
    _ack_decoder(UnsubAck, "UNSUBACK"),
    _empty_decoder(_PINGREQ, "PINGREQ"),
    _empty_decoder(_PINGRESP, "PINGRESP"),
    _empty_decoder(_DISCONNECT, "DISCONNECT"),
    None,
)


class PacketReader:
    """Turns a stream of bytes into MQTT packets, h11-style: `feed` bytes, then call
    `next_packet` until it returns None (it needs more bytes).

    Args:
        max_packet_size: the largest whole packet (fixed header included) accepted, in
            bytes. A fixed header announcing more raises `PacketTooLarge` before the body
            is waited for.

    Any `RemoteProtocolError` leaves the reader failed: every later `feed` or `next_packet`
    raises the same error, since the stream can no longer be framed.

    The size limit bounds one packet, not what a caller feeds without reading: drain with
    `next_packet` after every `feed` (as a receive loop does) and the reader never holds
    more than one partial packet beyond the last chunk fed.
    """

    # Buffering: `_buf` is an immutable bytes object read from `_pos`; bytes fed while it
    # still holds unread data wait in `_chunks`. They are joined to the unread tail only
    # when that completes a fixed header (under 5 bytes to copy) or a whole packet (copied
    # once, then consumed), so every byte is copied a bounded number of times whatever the
    # chunking. Decoding slices bytes, which yields bytes directly: the common case (feed
    # a recv() buffer, drain it) copies nothing but the fields themselves.
    __slots__ = ("_buf", "_pos", "_chunks", "_chunked", "_max_packet_size", "_error")

    def __init__(self, *, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE) -> None:
        if max_packet_size < 2:
            raise ValueError("max_packet_size must allow at least a 2-byte packet")
        self._buf = b""
        self._pos = 0
        self._chunks: list[bytes] = []
        self._chunked = 0
        self._max_packet_size = max_packet_size
        self._error: RemoteProtocolError | None = None

    @property
    def max_packet_size(self) -> int:
        return self._max_packet_size

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet returned as packets."""
        return len(self._buf) - self._pos + self._chunked

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the peer. Raises the stored error if failed."""
        if self._error is not None:
            raise self._error
        if not data:
            return
        if self._pos >= len(self._buf) and not self._chunks:
            self._buf = bytes(data)  # no copy when `data` is already bytes
            self._pos = 0
        else:
            data = bytes(data)
            self._chunks.append(data)
            self._chunked += len(data)

    def next_packet(self) -> Packet | None:
        """The next complete packet, or None if more bytes are needed.

        Raises `RemoteProtocolError` (or `PacketTooLarge`) when the peer broke the standard.
        """
        if self._error is not None:
            raise self._error
        buf = self._buf
        pos = self._pos
        try:
            # The hot path, inlined: a whole packet with a 1-byte remaining length in `buf`.
            if len(buf) - pos >= 2:
                first = buf[pos]
                length = buf[pos + 1]
                end = pos + 2 + length
                if length < 0x80 and end <= len(buf) and end - pos <= self._max_packet_size:
                    if first & 0xF0 == 0x30:
                        # PUBLISH: refer anything unusual to the general decoder for its error.
                        start = pos + 2
                        qos = (first >> 1) & 0x03
                        if length >= 2 and (first & 0x0E == 0 or qos and qos != 3):
                            topic_end = start + 2 + ((buf[start] << 8) | buf[start + 1])
                            payload_at = topic_end + 2 if qos else topic_end
                            if payload_at <= end:
                                try:
                                    topic = buf[start + 2 : topic_end].decode()
                                except UnicodeDecodeError:
                                    topic = ""
                                packet_id = (
                                    (buf[topic_end] << 8) | buf[topic_end + 1] if qos else None
                                )
                                if (
                                    topic
                                    and "+" not in topic
                                    and "#" not in topic
                                    and "\x00" not in topic
                                    and packet_id != 0
                                ):
                                    self._pos = end
                                    if _PublishShadow is None:
                                        return Publish(
                                            topic,
                                            buf[payload_at:end],
                                            _QOS[qos],
                                            bool(first & 0x01),
                                            bool(first & 0x08),
                                            packet_id,
                                        )
                                    packet = _new_object(_PublishShadow)
                                    packet.topic = topic
                                    packet.payload = buf[payload_at:end]
                                    packet.qos = _QOS[qos]
                                    packet.retain = bool(first & 0x01)
                                    packet.dup = bool(first & 0x08)
                                    packet.packet_id = packet_id
                                    packet.__class__ = Publish
                                    return packet
                    elif _FIRST_BYTE_ERRORS[first] is None:
                        self._pos = end
                        decoder = _DECODERS[first >> 4]
                        return decoder(first & 0x0F, memoryview(buf)[pos + 2 : end])  # type: ignore[misc]
            return self._next_slow()
        except RemoteProtocolError as exc:
            self._error = exc
            self._buf = b""
            self._pos = 0
            self._chunks.clear()
            self._chunked = 0
            raise

    def _next_slow(self) -> Packet | None:
        """Everything the hot path leaves: headers and packets across chunks, long remaining
        lengths, every error."""
        buf = self._buf
        pos = self._pos
        have = len(buf) - pos
        if have < 5 and self._chunks:
            # The fixed header may span chunks: joining costs at most 4 bytes of copying.
            buf = self._merge()
            pos = 0
            have = len(buf)
        if have < 2:
            return None
        first = buf[pos]
        decoded = decode_remaining_length(buf, pos + 1)
        if decoded is None:
            return None
        length, start = decoded
        end = start + length
        if end - pos > self._max_packet_size:
            raise PacketTooLarge(
                f"packet of {end - pos} bytes exceeds the maximum of {self._max_packet_size}"
            )
        error = _FIRST_BYTE_ERRORS[first]
        if error is not None:
            raise RemoteProtocolError(error[0], rule=error[1])
        if end > len(buf):
            if end - len(buf) > self._chunked:
                return None
            buf = self._merge()
            start -= pos
            end -= pos
            pos = 0
        self._pos = end
        return _DECODERS[first >> 4](first & 0x0F, memoryview(buf)[start:end])  # type: ignore[misc]

    def _merge(self) -> bytes:
        chunks = self._chunks
        chunks.insert(0, self._buf[self._pos :])
        self._buf = buf = b"".join(chunks)
        self._pos = 0
        chunks.clear()
        self._chunked = 0
        return buf


def decode(data: bytes | bytearray | memoryview) -> Packet:
    """Decode exactly one whole packet. Raises `RemoteProtocolError` if `data` holds less or
    more than one packet, or anything the standard forbids."""
    reader = PacketReader(max_packet_size=MAX_REMAINING_LENGTH + 5)
    reader.feed(data)
    packet = reader.next_packet()
    if packet is None:
        raise RemoteProtocolError("incomplete packet")
    if reader.buffered:
        raise RemoteProtocolError(f"{reader.buffered} bytes after the packet")
    return packet


__all__ = [
    "DEFAULT_MAX_PACKET_SIZE",
    "PacketReader",
    "decode",
    "encode",
    "encode_into",
]
