"""Wire primitives against the byte layouts of MQTT 3.1.1 sections 1.5 and 2.2.3."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import mqtt_text

from gateway.mqtt.errors import LocalProtocolError, RemoteProtocolError
from gateway.mqtt.wire import (
    MAX_REMAINING_LENGTH,
    decode_binary,
    decode_remaining_length,
    decode_u8,
    decode_u16,
    decode_utf8,
    encode_binary,
    encode_remaining_length,
    encode_u16,
    encode_utf8,
    remaining_length_size,
)

# Section 2.2.3, table 2.4: the boundaries of 1, 2, 3 and 4 Remaining Length bytes.
REMAINING_LENGTH_VECTORS = [
    (0, b"\x00"),
    (127, b"\x7f"),
    (128, b"\x80\x01"),
    (16_383, b"\xff\x7f"),
    (16_384, b"\x80\x80\x01"),
    (2_097_151, b"\xff\xff\x7f"),
    (2_097_152, b"\x80\x80\x80\x01"),
    (268_435_455, b"\xff\xff\xff\x7f"),
    (321, b"\xc1\x02"),  # the worked example of section 2.2.3's algorithm
]


@pytest.mark.parametrize(("value", "wire"), REMAINING_LENGTH_VECTORS)
def test_remaining_length_encodes_as_table_2_4(value: int, wire: bytes) -> None:
    out = bytearray()
    encode_remaining_length(value, out)
    assert bytes(out) == wire
    assert remaining_length_size(value) == len(wire)


@pytest.mark.parametrize(("value", "wire"), REMAINING_LENGTH_VECTORS)
def test_remaining_length_decodes_as_table_2_4(value: int, wire: bytes) -> None:
    assert decode_remaining_length(b"\x30" + wire + b"rest", 1) == (value, 1 + len(wire))


@pytest.mark.parametrize("prefix", [b"", b"\x80", b"\xff\xff", b"\x80\x80\x80"])
def test_remaining_length_cut_short_asks_for_more_data(prefix: bytes) -> None:
    assert decode_remaining_length(prefix, 0) is None


def test_remaining_length_of_five_bytes_is_malformed() -> None:
    with pytest.raises(RemoteProtocolError, match="more than 4 bytes"):
        decode_remaining_length(b"\xff\xff\xff\xff\x01", 0)


@pytest.mark.parametrize("value", [-1, MAX_REMAINING_LENGTH + 1])
def test_remaining_length_outside_range_is_our_error(value: int) -> None:
    with pytest.raises(LocalProtocolError):
        encode_remaining_length(value, bytearray())


@given(st.integers(0, MAX_REMAINING_LENGTH))
def test_remaining_length_round_trips(value: int) -> None:
    out = bytearray()
    encode_remaining_length(value, out)
    assert decode_remaining_length(out, 0) == (value, len(out))


def test_two_byte_integer_is_big_endian_section_1_5_2() -> None:
    out = bytearray()
    encode_u16(0x1234, out)
    assert out == b"\x12\x34"
    assert decode_u16(b"\x00\x12\x34", 1) == (0x1234, 3)


def test_two_byte_integer_out_of_range_is_our_error() -> None:
    with pytest.raises(LocalProtocolError):
        encode_u16(0x10000, bytearray())


@pytest.mark.parametrize("buf", [b"", b"\x01"])
def test_truncated_two_byte_integer_is_a_protocol_violation(buf: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_u16(buf, 0)


def test_truncated_byte_is_a_protocol_violation() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_u8(b"\x01", 1)


def test_utf8_string_example_of_section_1_5_3() -> None:
    # Figure 1.3: "A\u2a6d4" (U+0041 U+2A6D4) is 00 05 41 F0 AA 9B 94.
    wire = b"\x00\x05\x41\xf0\xaa\x9b\x94"
    out = bytearray()
    encode_utf8("A\U0002a6d4", out)
    assert bytes(out) == wire
    assert decode_utf8(wire, 0) == ("A\U0002a6d4", 7)


@pytest.mark.parametrize(
    "body",
    [
        b"\xff",  # never valid in UTF-8
        b"\xc3",  # truncated sequence
        b"\xc0\x80",  # overlong U+0000
        b"\xe0\x80\xaf",  # overlong "/"
        b"\xf4\x90\x80\x80",  # beyond U+10FFFF
    ],
)
def test_MQTT_1_5_3_1_ill_formed_utf8_is_a_protocol_violation(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        decode_utf8(len(body).to_bytes(2, "big") + body, 0)
    assert caught.value.rule == "MQTT-1.5.3-1"


@pytest.mark.parametrize("body", [b"\xed\xa0\x80", b"\xed\xbf\xbf", b"a\xed\xb2\x80b"])
def test_MQTT_1_5_3_1_encoded_surrogates_are_a_protocol_violation(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        decode_utf8(len(body).to_bytes(2, "big") + body, 0)
    assert caught.value.rule == "MQTT-1.5.3-1"


def test_MQTT_1_5_3_1_surrogates_cannot_be_encoded() -> None:
    with pytest.raises(LocalProtocolError):
        encode_utf8("a\ud800", bytearray())


def test_MQTT_1_5_3_2_null_character_is_a_protocol_violation() -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        decode_utf8(b"\x00\x03a\x00b", 0)
    assert caught.value.rule == "MQTT-1.5.3-2"


def test_MQTT_1_5_3_2_null_character_cannot_be_encoded() -> None:
    with pytest.raises(LocalProtocolError):
        encode_utf8("a\x00", bytearray())


def test_MQTT_1_5_3_3_byte_order_mark_is_not_stripped() -> None:
    wire = b"\x00\x04\xef\xbb\xbfA"
    assert decode_utf8(wire, 0) == ("\ufeffA", 6)
    out = bytearray()
    encode_utf8("\ufeffA", out)
    assert bytes(out) == wire


def test_utf8_string_longer_than_65535_bytes_cannot_be_encoded() -> None:
    encode_utf8("x" * 65_535, bytearray())
    with pytest.raises(LocalProtocolError):
        encode_utf8("\u00e9" * 32_768, bytearray())  # 65,536 bytes


@pytest.mark.parametrize("wire", [b"", b"\x00", b"\x00\x05abc"])
def test_truncated_utf8_string_is_a_protocol_violation(wire: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_utf8(wire, 0)


def test_binary_data_is_length_prefixed() -> None:
    out = bytearray()
    encode_binary(b"\x00\xff", out)
    assert bytes(out) == b"\x00\x02\x00\xff"
    assert decode_binary(memoryview(b"xx" + bytes(out)), 2) == (b"\x00\xff", 6)


def test_truncated_binary_data_is_a_protocol_violation() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_binary(b"\x00\x03ab", 0)
    with pytest.raises(RemoteProtocolError):
        decode_binary(b"\x00", 0)


def test_binary_data_longer_than_65535_bytes_cannot_be_encoded() -> None:
    with pytest.raises(LocalProtocolError):
        encode_binary(bytes(65_536), bytearray())


@given(mqtt_text(max_size=50))
def test_every_mqtt_string_round_trips(text: str) -> None:
    out = bytearray(b"..")
    encode_utf8(text, out)
    assert decode_utf8(memoryview(out), 2) == (text, len(out))


@given(st.binary(max_size=80), st.integers(0, 80))
def test_string_decoding_of_any_bytes_raises_only_protocol_errors(data: bytes, at: int) -> None:
    for decoder in (decode_utf8, decode_binary, decode_u16, decode_u8, decode_remaining_length):
        try:
            decoder(data, at)
        except RemoteProtocolError:
            pass
