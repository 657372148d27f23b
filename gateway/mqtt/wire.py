"""MQTT 3.1.1 wire primitives (OASIS MQTT 3.1.1, sections 1.5 and 2.2.3).

Theory of operation: every `decode_*` function is pure. It takes a buffer (bytes, bytearray
or memoryview) holding exactly the bytes it may read, and an offset into it, and returns
`(value, new_offset)`. Running past the end of the buffer means the packet's remaining
length announced fewer bytes than its fields need: a malformed packet, so the decoders raise
`RemoteProtocolError` (never IndexError or UnicodeError). Every `encode_*` function appends
to a bytearray and raises `LocalProtocolError` when our own value cannot be put on the wire.

The data representations are those of section 1.5:
- Two Byte Integer: big-endian unsigned 16 bits (1.5.2).
- UTF-8 encoded string: a 16-bit length then that many bytes of well-formed UTF-8 (1.5.3),
  without U+0000 (MQTT-1.5.3-2) and without the surrogate code points U+D800..U+DFFF
  (MQTT-1.5.3-1; Python's strict decoder already refuses their 3-byte encodings, and
  overlong forms). A U+FEFF is kept as it is (MQTT-1.5.3-3): we decode with "utf-8",
  never "utf-8-sig".
- Binary data: a 16-bit length then that many bytes (CONNECT's will message and password).
- Remaining Length: 1 to 4 bytes of 7-bit groups, least significant first, with the high
  bit set on every byte but the last (2.2.3); at most 268,435,455.
"""

from __future__ import annotations

from .errors import LocalProtocolError, RemoteProtocolError

Buffer = bytes | bytearray | memoryview

MAX_REMAINING_LENGTH = 268_435_455
"""The largest value four Remaining Length bytes can carry (section 2.2.3)."""

MAX_STRING_BYTES = 65_535
"""A UTF-8 string or binary field is at most this many bytes (sections 1.5.3 and 3.1.3)."""


def decode_remaining_length(buf: Buffer, offset: int) -> tuple[int, int] | None:
    """Decode the Remaining Length starting at `buf[offset]` (section 2.2.3).

    Returns `(value, new_offset)`, or None when the buffer ends before the last length
    byte (the caller needs more data). Raises `RemoteProtocolError` when a fourth byte
    still has its continuation bit set: a fifth length byte is malformed.
    """
    value = 0
    shift = 0
    end = len(buf)
    for i in range(offset, offset + 4):
        if i >= end:
            return None
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i + 1
        shift += 7
    raise RemoteProtocolError("remaining length uses more than 4 bytes (section 2.2.3)")


def decode_u8(buf: Buffer, offset: int) -> tuple[int, int]:
    """Decode one byte. Raises `RemoteProtocolError` if the buffer ends first."""
    if offset >= len(buf):
        raise RemoteProtocolError("packet ends inside a one-byte field")
    return buf[offset], offset + 1


def decode_u16(buf: Buffer, offset: int) -> tuple[int, int]:
    """Decode a Two Byte Integer (section 1.5.2). Raises `RemoteProtocolError` if truncated."""
    if offset + 2 > len(buf):
        raise RemoteProtocolError("packet ends inside a two-byte integer")
    return (buf[offset] << 8) | buf[offset + 1], offset + 2


def decode_binary(buf: Buffer, offset: int) -> tuple[bytes, int]:
    """Decode length-prefixed binary data (section 1.5.3 layout, used by 3.1.3.3/3.1.3.5).

    Returns `(bytes, new_offset)`; raises `RemoteProtocolError` if the data is truncated.
    """
    if offset + 2 > len(buf):
        raise RemoteProtocolError("packet ends inside a length prefix")
    end = offset + 2 + ((buf[offset] << 8) | buf[offset + 1])
    if end > len(buf):
        raise RemoteProtocolError("packet ends inside a length-prefixed field")
    return bytes(buf[offset + 2 : end]), end


def check_utf8_bytes(data: Buffer) -> str:
    """Decode `data` as an MQTT UTF-8 string body (section 1.5.3), without the length prefix.

    Raises `RemoteProtocolError` with rule MQTT-1.5.3-1 for ill-formed UTF-8 (including
    encoded surrogates and overlong forms) and MQTT-1.5.3-2 for U+0000.
    """
    try:
        text = str(data, "utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(
            f"ill-formed UTF-8 string: {exc.reason} at byte {exc.start}", rule="MQTT-1.5.3-1"
        ) from None
    if "\x00" in text:
        raise RemoteProtocolError("UTF-8 string contains U+0000", rule="MQTT-1.5.3-2")
    return text


def decode_utf8(buf: Buffer, offset: int) -> tuple[str, int]:
    """Decode a UTF-8 encoded string (section 1.5.3) at `offset`.

    Returns `(str, new_offset)`. Raises `RemoteProtocolError` if truncated, ill-formed
    (MQTT-1.5.3-1) or holding U+0000 (MQTT-1.5.3-2). A U+FEFF is returned as is
    (MQTT-1.5.3-3).
    """
    if offset + 2 > len(buf):
        raise RemoteProtocolError("packet ends inside a string length")
    start = offset + 2
    end = start + ((buf[offset] << 8) | buf[offset + 1])
    if end > len(buf):
        raise RemoteProtocolError("packet ends inside a UTF-8 string")
    return check_utf8_bytes(buf[start:end]), end


def encode_remaining_length(value: int, out: bytearray) -> None:
    """Append `value` as a Remaining Length (section 2.2.3).

    Raises `LocalProtocolError` if it is negative or above 268,435,455.
    """
    if value < 0 or value > MAX_REMAINING_LENGTH:
        raise LocalProtocolError(f"remaining length {value} is outside 0..{MAX_REMAINING_LENGTH}")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def encode_frame(first_byte: int, body: bytes | bytearray, out: bytearray) -> None:
    """Append a packet from its first byte (type and flags) and its body (section 2.2)."""
    out.append(first_byte)
    encode_remaining_length(len(body), out)
    out += body


def encode_packet_id(packet_id: int | None, what: str) -> bytes:
    """A Packet Identifier's two bytes (2.3.1). Raises `LocalProtocolError` unless it is an
    int in 1..65535 (`what` names the packet in the message)."""
    if type(packet_id) is not int or not 0 < packet_id <= 0xFFFF:
        raise LocalProtocolError(f"{what} needs a packet identifier 1..65535, not {packet_id!r}")
    return packet_id.to_bytes(2, "big")


encode_varint = encode_remaining_length
"""Append a Variable Byte Integer (MQTT 5 section 1.5.5; the Remaining Length's format)."""


def encode_u32(value: int, out: bytearray) -> None:
    """Append a Four Byte Integer. Raises `LocalProtocolError` outside 0..2**32-1."""
    if value < 0 or value > 0xFFFF_FFFF:
        raise LocalProtocolError(f"{value} does not fit a four-byte integer")
    out += value.to_bytes(4, "big")


def remaining_length_size(value: int) -> int:
    """How many bytes `encode_remaining_length(value)` appends."""
    if value < 0x80:
        return 1
    if value < 0x4000:
        return 2
    if value < 0x20_0000:
        return 3
    return 4


def encode_u16(value: int, out: bytearray) -> None:
    """Append a Two Byte Integer. Raises `LocalProtocolError` outside 0..65535."""
    if value < 0 or value > 0xFFFF:
        raise LocalProtocolError(f"{value} does not fit a two-byte integer")
    out.append(value >> 8)
    out.append(value & 0xFF)


def utf8_bytes(text: str) -> bytes:
    """Encode `text` for an MQTT UTF-8 string field, checking section 1.5.3.

    Raises `LocalProtocolError` for lone surrogates, U+0000 or more than 65535 bytes.
    """
    if "\x00" in text:
        raise LocalProtocolError("an MQTT string must not contain U+0000 (MQTT-1.5.3-2)")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError(
            "an MQTT string must not contain surrogate code points (MQTT-1.5.3-1)"
        ) from None
    if len(data) > MAX_STRING_BYTES:
        raise LocalProtocolError(f"an MQTT string is at most 65535 bytes, not {len(data)}")
    return data


def encode_utf8(text: str, out: bytearray) -> None:
    """Append `text` as a UTF-8 encoded string (section 1.5.3); see `utf8_bytes`."""
    data = utf8_bytes(text)
    out += len(data).to_bytes(2, "big")
    out += data


def encode_binary(data: bytes, out: bytearray) -> None:
    """Append length-prefixed binary data. Raises `LocalProtocolError` past 65535 bytes."""
    if len(data) > MAX_STRING_BYTES:
        raise LocalProtocolError(f"a binary field is at most 65535 bytes, not {len(data)}")
    out += len(data).to_bytes(2, "big")
    out += data
