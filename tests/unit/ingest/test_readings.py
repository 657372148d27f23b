"""Report payloads: the three shapes, timestamps, and each type's checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.ingest import (
    BlobType,
    Limits,
    NumberType,
    Permission,
    Reading,
    ReadingRejected,
    RejectCode,
    StringType,
    ValueDecl,
    XmlType,
    check_data,
    parse_readings,
    parse_timestamp,
)


def decl(vtype, permission=Permission.R) -> ValueDecl:
    return ValueDecl(name="v", type=vtype, permission=permission)


def rejected(code: RejectCode, fn, *args) -> str:
    with pytest.raises(ReadingRejected) as info:
        fn(*args)
    assert info.value.code is code, info.value
    return info.value.reason


def test_plain_text_is_one_reading_without_timestamp():
    parsed = parse_readings(b"21.5")
    assert parsed.readings == (Reading("21.5", None),) and not parsed.batch


def test_plain_text_keeps_leading_and_trailing_spaces_for_strings():
    assert parse_readings(b"  hi \n").readings == (Reading("  hi \n", None),)


def test_json_reading_carries_data_and_a_utc_timestamp():
    parsed = parse_readings(b'{"data": 3, "timestamp": "2026-11-26T08:00:00.5+01:00"}')
    assert parsed.readings == (Reading(3, datetime(2026, 11, 26, 7, 0, 0, 500000, tzinfo=UTC)),)
    assert parsed.readings[0].timestamp.tzinfo is UTC


def test_a_batch_yields_each_reading_and_marks_bad_items_alone():
    payload = json.dumps({"reports": [
        {"data": "1", "timestamp": "2026-01-01T00:00:00Z"},
        {"value": 2},
        {"data": True},
        {"data": 4, "timestamp": "yesterday"},
        {"data": 5},
    ]}).encode()
    parsed = parse_readings(payload)
    assert parsed.batch
    good, missing, boolean, bad_ts, last = parsed.readings
    assert good == Reading("1", datetime(2026, 1, 1, tzinfo=UTC))
    assert isinstance(missing, ReadingRejected) and missing.code is RejectCode.MALFORMED
    assert isinstance(boolean, ReadingRejected) and boolean.code is RejectCode.TYPE
    assert isinstance(bad_ts, ReadingRejected) and bad_ts.code is RejectCode.MALFORMED
    assert last == Reading(5, None)


@pytest.mark.parametrize("payload, code", [
    (b"\xff", RejectCode.MALFORMED),
    (b"{nope", RejectCode.MALFORMED),
    (b'{"reports": 3}', RejectCode.MALFORMED),
    (b'{"reports": [], "data": 1}', RejectCode.MALFORMED),
    (b'{"data": 1, "unit": "C"}', RejectCode.MALFORMED),
    (b'{"data": [1]}', RejectCode.TYPE),
    (b'{"data": null}', RejectCode.TYPE),
    (b'{"data": Infinity}', RejectCode.MALFORMED),
])
def test_unusable_payloads_are_rejected_whole(payload, code):
    rejected(code, parse_readings, payload)


def test_payload_and_batch_sizes_are_capped():
    small = Limits(max_report_bytes=100, max_batch_readings=2)
    rejected(RejectCode.TOO_LARGE, parse_readings, b"x" * 101, small)
    rejected(RejectCode.TOO_LARGE, parse_readings,
             b'{"reports": [{"data": 1}, {"data": 2}, {"data": 3}]}', small)


@pytest.mark.parametrize("text, expected", [
    ("2026-11-26T07:00:00Z", datetime(2026, 11, 26, 7, tzinfo=UTC)),
    ("2026-11-26t07:00:00z", datetime(2026, 11, 26, 7, tzinfo=UTC)),
    ("2026-11-26 07:00:00-02:30", datetime(2026, 11, 26, 9, 30, tzinfo=UTC)),
    ("2026-11-26T07:00:00.123456789Z", datetime(2026, 11, 26, 7, 0, 0, 123456, tzinfo=UTC)),
])
def test_rfc3339_timestamps_are_read_as_utc(text, expected):
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize("text", [
    "2026-11-26T07:00:00",  # no offset: ambiguous
    "2026-11-26",
    "2026-W48-4T07:00:00Z",
    "2026-02-30T07:00:00Z",
    "2026-11-26T25:00:00Z",
    "2026-11-26T07:00:60Z",
    "0000-01-01T00:00:00+01:00",
    12345,
])
def test_timestamps_that_are_not_rfc3339_are_malformed(text):
    rejected(RejectCode.MALFORMED, parse_timestamp, text)


NUM = decl(NumberType(min=-10, max=10, step=0.5, unit="C"))


@pytest.mark.parametrize("data, stored", [
    ("1.5", "1.5"), (" -10 ", "-10"), (10, "10"), (2.5, "2.5"), ("1e0", "1e0"), (-0.5, "-0.5"),
])
def test_numbers_in_range_on_the_step_are_stored_as_sent(data, stored):
    assert check_data(NUM, data) == stored


@pytest.mark.parametrize("data, code", [
    ("10.5", RejectCode.RANGE), (-11, RejectCode.RANGE), ("0.3", RejectCode.STEP),
    ("abc", RejectCode.TYPE), ("nan", RejectCode.TYPE), ("inf", RejectCode.TYPE),
    ("1_0", RejectCode.TYPE), ("", RejectCode.TYPE), ("0x10", RejectCode.TYPE),
    (10**400, RejectCode.RANGE), ("1e400", RejectCode.RANGE),
])
def test_numbers_out_of_range_off_step_or_not_numbers_are_refused(data, code):
    rejected(code, check_data, NUM, data)


def test_a_number_without_step_takes_any_value_in_range():
    assert check_data(decl(NumberType(min=0, max=1)), "0.123456789") == "0.123456789"


def test_step_is_counted_from_min():
    d = decl(NumberType(min=0.25, max=10, step=0.5))
    assert check_data(d, "0.75") == "0.75"
    rejected(RejectCode.STEP, check_data, d, "1")


def test_strings_are_limited_in_characters_not_bytes():
    d = decl(StringType(max=3))
    assert check_data(d, "ééé") == "ééé"
    rejected(RejectCode.SIZE, check_data, d, "abcd")
    rejected(RejectCode.TYPE, check_data, d, 12)
    rejected(RejectCode.MALFORMED, check_data, d, "\ud800")


def test_text_holding_u0000_is_malformed_for_every_text_type():
    # Neither store keeps it as text (PostgreSQL's text refuses it): refused with a reason,
    # never a write that fails and costs the device its connection.
    for vtype in (StringType(max=10), BlobType(max=10), XmlType(max=10)):
        assert "U+0000" in rejected(RejectCode.MALFORMED, check_data, decl(vtype), "a\x00b")


def test_blobs_are_limited_in_bytes():
    d = decl(BlobType(max=4))
    assert check_data(d, "QUJD") == "QUJD"
    rejected(RejectCode.SIZE, check_data, d, "ééé")


def test_xml_must_be_well_formed_small_and_without_a_dtd():
    d = decl(XmlType(max=200))
    assert check_data(d, "<a><b x='1'/></a>") == "<a><b x='1'/></a>"
    rejected(RejectCode.XML, check_data, d, "<a>")
    rejected(RejectCode.XML, check_data, d, "plain")
    rejected(RejectCode.SIZE, check_data, d, "<a>" + "x" * 200 + "</a>")
    bomb = ('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
            '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><l>&b;</l>')
    assert "DTD" in rejected(RejectCode.XML, check_data, d, bomb)


def test_timezone_offsets_other_than_utc_are_converted():
    ts = parse_timestamp("2026-06-01T12:00:00+05:45")
    assert ts == datetime(2026, 6, 1, 12, tzinfo=timezone(timedelta(hours=5, minutes=45)))
    assert ts.utcoffset() == timedelta(0)
