"""MQTT 3.1.1 and 5.0 packets to bytes and back (OASIS MQTT 3.1.1 and 5.0, chapters 2, 3).

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

Both versions share the fixed header. A reader starts at 3.1.1 (`protocol_level=4`) and
switches itself to MQTT 5 when it decodes a CONNECT of protocol level 5: from then on the
bodies are decoded by `decoder5` (properties, reason codes, AUTH). A client-side reader is
built with `protocol_level=5` when it speaks 5.

`encode` and `encode_into` (defined in `encoder`, re-exported here so that one module is the
codec's public face) refuse with `LocalProtocolError` any packet the reader would refuse.
"""

from __future__ import annotations

import dataclasses

from .decoder import DECODERS, DECODERS_5, FIRST_BYTE_ERRORS, FIRST_BYTE_ERRORS_5
from .encoder import encode, encode_into
from .errors import PacketTooLarge, RemoteProtocolError
from .packets import PROTOCOL_LEVEL_3_1_1, PROTOCOL_LEVEL_5, Packet, Publish, QoS
from .properties import NO_PROPERTIES, Properties, decode_publish_properties
from .wire import MAX_REMAINING_LENGTH, decode_remaining_length

DEFAULT_MAX_PACKET_SIZE = 256 * 1024
# A reader keeps up to this many decoded PUBLISH property lists of at most this many
# bytes, keyed by their bytes (Properties are immutable, so sharing them is safe): memory
# per connection stays bounded whatever the peer sends.
_CACHED_LISTS = 8
_CACHED_PROPERTIES_BYTES = 64

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
    if names != ("topic", "payload", "qos", "retain", "dup", "packet_id", "properties"):
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
    __slots__ = ("_buf", "_pos", "_chunks", "_chunked", "_max_packet_size", "_error", "_v5",
                 "_decoders", "_first_errors", "_props_cache")

    def __init__(self, *, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
                 protocol_level: int = PROTOCOL_LEVEL_3_1_1) -> None:
        if max_packet_size < 2:
            raise ValueError("max_packet_size must allow at least a 2-byte packet")
        self._buf = b""
        self._pos = 0
        self._chunks: list[bytes] = []
        self._chunked = 0
        self._max_packet_size = max_packet_size
        self._error: RemoteProtocolError | None = None
        self._v5 = False
        self._props_cache: dict[bytes, Properties] = {}
        self._decoders = DECODERS
        self._first_errors = FIRST_BYTE_ERRORS
        if protocol_level == PROTOCOL_LEVEL_5:
            self._switch_to_5()
        elif protocol_level != PROTOCOL_LEVEL_3_1_1:
            raise ValueError("protocol_level must be 4 (3.1.1) or 5")

    def _switch_to_5(self) -> None:
        self._v5 = True
        self._decoders = DECODERS_5
        self._first_errors = FIRST_BYTE_ERRORS_5

    @property
    def protocol_level(self) -> int:
        """4 until a level-5 CONNECT was decoded (or the reader was built for 5), then 5."""
        return PROTOCOL_LEVEL_5 if self._v5 else PROTOCOL_LEVEL_3_1_1

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
                                    topic = None
                                packet_id = (
                                    (buf[topic_end] << 8) | buf[topic_end + 1] if qos else None
                                )
                                # isprintable(): False for U+0000 and every control
                                # character (and some legal text, left to the slow path).
                                # MQTT 5 allows an empty topic with a topic alias.
                                if topic is None or packet_id == 0 or not (
                                    (
                                        topic
                                        and "+" not in topic
                                        and "#" not in topic
                                        and topic.isprintable()
                                    )
                                    or (not topic and self._v5)
                                ):
                                    return self._next_slow()
                                properties = NO_PROPERTIES
                                if self._v5:
                                    if payload_at == end:
                                        return self._next_slow()
                                    plen = buf[payload_at]
                                    if plen:
                                        props_end = payload_at + 1 + plen
                                        if props_end > end or plen >= 0x80:
                                            return self._next_slow()
                                        # Devices repeat their property lists (alias,
                                        # expiry, firmware tag): decoded once per reader.
                                        key = buf[payload_at:props_end]
                                        properties = self._props_cache.get(key)
                                        if properties is None:
                                            fast = decode_publish_properties(buf, payload_at, end)
                                            if fast is None:
                                                return self._next_slow()
                                            properties = fast[0]
                                            if plen <= _CACHED_PROPERTIES_BYTES:
                                                if len(self._props_cache) >= _CACHED_LISTS:
                                                    self._props_cache.clear()
                                                self._props_cache[key] = properties
                                        payload_at = props_end
                                    else:
                                        payload_at += 1
                                    if not topic and properties.topic_alias is None:
                                        return self._next_slow()
                                self._pos = end
                                if _PublishShadow is None:
                                    return Publish(
                                        topic,
                                        buf[payload_at:end],
                                        _QOS[qos],
                                        bool(first & 0x01),
                                        bool(first & 0x08),
                                        packet_id,
                                        properties,
                                    )
                                packet = _new_object(_PublishShadow)
                                packet.topic = topic
                                packet.payload = buf[payload_at:end]
                                packet.qos = _QOS[qos]
                                packet.retain = bool(first & 0x01)
                                packet.dup = bool(first & 0x08)
                                packet.packet_id = packet_id
                                packet.properties = properties
                                packet.__class__ = Publish
                                return packet
                    elif self._first_errors[first] is None and first != 0x10:
                        self._pos = end
                        decoder = self._decoders[first >> 4]
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
        lengths, CONNECT, every error."""
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
        error = self._first_errors[first]
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
        packet = self._decoders[first >> 4](first & 0x0F, memoryview(buf)[start:end])  # type: ignore[misc]
        if first == 0x10 and packet.protocol_level == PROTOCOL_LEVEL_5:  # type: ignore[union-attr]
            self._switch_to_5()
        return packet

    def _merge(self) -> bytes:
        chunks = self._chunks
        chunks.insert(0, self._buf[self._pos :])
        self._buf = buf = b"".join(chunks)
        self._pos = 0
        chunks.clear()
        self._chunked = 0
        return buf


def decode(data: bytes | bytearray | memoryview,
           protocol_level: int = PROTOCOL_LEVEL_3_1_1) -> Packet:
    """Decode exactly one whole packet of `protocol_level` (4 or 5; a CONNECT carries its
    own). Raises `RemoteProtocolError` if `data` holds less or more than one packet, or
    anything the standard forbids."""
    reader = PacketReader(max_packet_size=MAX_REMAINING_LENGTH + 5,
                          protocol_level=protocol_level)
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
