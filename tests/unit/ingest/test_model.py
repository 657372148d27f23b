"""`model` declarations: parsing, every type, every reason collected, limits refused cheaply."""

from __future__ import annotations

import json

import pytest

from gateway.ingest import (
    DEFAULT_LIMITS,
    BlobType,
    DeclarationRejected,
    Limits,
    NumberType,
    Permission,
    StringType,
    XmlType,
    parse_model,
)
from gateway.model.declarations import value_decl_from_json


def model(*devices: dict) -> bytes:
    return json.dumps({"devices": list(devices)}).encode()


def reasons_of(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[str, ...]:
    with pytest.raises(DeclarationRejected) as info:
        parse_model(payload, limits)
    return info.value.reasons


def test_a_declaration_with_every_type_parses_into_frozen_values():
    decl = parse_model(model({
        "name": "thermo", "description": "kitchen",
        "values": [
            {"name": "temp", "permission": "r", "period": 60,
             "number": {"min": -40, "max": 125, "step": 0.5, "unit": "°C"}},
            {"name": "label", "permission": "rw", "string": {"max": 32}},
            {"name": "fw", "permission": "w", "blob": {"max": 4096}},
            {"name": "cfg", "permission": "rw", "xml": {"max": 2048}, "description": "config"},
            {"name": "doc", "permission": "r", "xml": {}},
        ],
    }))
    (dev,) = decl.devices
    assert dev.name == "thermo" and dev.description == "kitchen"
    temp, label, fw, cfg, doc = dev.values
    assert temp.type == NumberType(min=-40, max=125, step=0.5, unit="°C")
    assert temp.permission is Permission.R and temp.period == 60
    assert label.type == StringType(max=32) and label.permission is Permission.RW
    assert fw.type == BlobType(max=4096) and fw.permission is Permission.W
    assert cfg.type == XmlType(max=2048) and cfg.description == "config"
    assert doc.type == XmlType(max=DEFAULT_LIMITS.max_xml_bytes)
    with pytest.raises(AttributeError):
        temp.name = "other"  # frozen


def test_value_declarations_round_trip_through_their_json_form():
    decl = parse_model(model({"name": "d", "values": [
        {"name": "a", "permission": "r", "number": {"min": 0, "max": 1}},
        {"name": "b", "permission": "rw", "string": {"max": 3}, "period": 1.5},
        {"name": "c", "permission": "w", "blob": {"max": 9}, "description": "x"},
        {"name": "e", "permission": "r", "xml": {"max": 10}},
    ]}))
    for v in decl.devices[0].values:
        assert value_decl_from_json(json.loads(json.dumps(v.to_json()))) == v


def test_every_reason_is_reported_not_only_the_first():
    reasons = reasons_of(model(
        {"name": "a/b", "values": [
            {"name": "", "permission": "x", "number": {"min": 5, "max": 1}},
            {"name": "ok", "permission": "r"},
            {"name": "s", "permission": "r", "string": {"max": 0}},
        ]},
        {"name": "dup", "values": []},
        {"name": "dup", "values": []},
    ))
    text = "\n".join(reasons)
    assert "devices[0].name" in text and "'/'" in text
    assert "devices[0].values[0].name: must not be empty" in text
    assert "devices[0].values[0].permission" in text
    assert "min (5) is greater than max (1)" in text
    assert "devices[0].values[1]: needs exactly one of" in text
    assert "devices[0].values[2].string.max" in text
    assert "devices[2].name: device 'dup' declared twice" in text
    assert len(reasons) == 7


@pytest.mark.parametrize("value, fragment", [
    ({"name": "v", "permission": "r", "number": {"max": 1}}, "number.min: required"),
    ({"name": "v", "permission": "r", "number": {"min": 0, "max": 1, "step": 0}}, "step"),
    ({"name": "v", "permission": "r", "number": {"min": 0, "max": 1, "step": -1}}, "step"),
    ({"name": "v", "permission": "r", "number": {"min": True, "max": 1}}, "min"),
    ({"name": "v", "permission": "r", "number": {"min": 0, "max": 1, "unit": 3}}, "unit"),
    ({"name": "v", "permission": "r", "number": {"min": 0, "max": 1, "x": 3}}, "unknown"),
    ({"name": "v", "permission": "r", "string": {}}, "string.max: required"),
    ({"name": "v", "permission": "r", "string": {"max": 10**9}}, "string.max"),
    ({"name": "v", "permission": "r", "blob": {"max": "big"}}, "blob.max"),
    ({"name": "v", "permission": "r", "xml": {"max": -1}}, "xml.max"),
    ({"name": "v", "permission": "r", "string": {"max": 1}, "blob": {"max": 1}},
     "exactly one of"),
    ({"name": "v", "permission": "R", "string": {"max": 1}}, "permission"),
    ({"name": "v", "permission": "r", "string": {"max": 1}, "period": 0}, "period"),
    ({"name": "v", "permission": "r", "string": {"max": 1}, "colour": 1}, "unknown field"),
    ({"name": "$sys", "permission": "r", "string": {"max": 1}}, "'$'"),
    ({"name": "a+b", "permission": "r", "string": {"max": 1}}, "'+'"),
    ({"name": "x" * 65, "permission": "r", "string": {"max": 1}}, "longer than 64"),
    ({"name": "\ud800", "permission": "r", "string": {"max": 1}}, "Unicode"),
    ("not an object", "must be an object"),
])
def test_each_bad_value_field_is_named_in_the_reasons(value, fragment):
    reasons = reasons_of(model({"name": "d", "values": [value]}))
    assert any(fragment in r for r in reasons), reasons


@pytest.mark.parametrize("payload, fragment", [
    (b"\xff\xfe", "UTF-8"),
    (b"{", "not JSON"),
    (b"[]", "must be an object"),
    (b'{"devices": {}}', "must be an object"),
    (b'{"devices": [], "x": 1}', "unknown field"),
    (b'{"devices": [{"name": "d", "values": [{"name": "v", "permission": "r", '
     b'"number": {"min": NaN, "max": 1}}]}]}', "not a JSON number"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),  # 200 kB of nesting: refused, no crash
])
def test_malformed_payloads_are_rejected_with_one_reason(payload, fragment):
    reasons = reasons_of(payload)
    assert any(fragment in r for r in reasons), reasons


def test_a_model_of_a_million_values_is_refused_by_size_before_parsing():
    values = [{"name": f"v{i}", "permission": "r", "string": {"max": 1}} for i in range(100_000)]
    # Ten copies: not even valid JSON, so a size reason proves it was never parsed.
    payload = model({"name": "d", "values": values}) * 10
    assert len(payload) > 40_000_000
    assert reasons_of(payload) == (f"model is {len(payload)} bytes; the limit is 262144",)


def test_counts_over_the_caps_are_refused_before_values_are_validated():
    small = Limits(max_devices_per_network=3, max_values_per_network=5,
                   max_values_per_device=2)
    assert "4 devices; the limit is 3" in reasons_of(
        model(*({"name": f"d{i}", "values": []} for i in range(4))), small)[0]
    many = [{"name": f"v{i}", "values": [{}, {}]} for i in range(3)]
    assert "6 values; the limit is 5" in reasons_of(model(*many), small)[0]
    assert "3 values; the limit is 2 per device" in reasons_of(
        model({"name": "d", "values": [{}, {}, {}]}), small)[0]


def test_reasons_stop_at_the_cap_and_say_so():
    values = [{"name": f"v{i}", "permission": "nope", "string": {"max": 1}} for i in range(200)]
    reasons = reasons_of(model({"name": "d", "values": values}))
    assert len(reasons) == DEFAULT_LIMITS.max_reasons + 1
    assert reasons[-1] == f"(stopped after {DEFAULT_LIMITS.max_reasons} reasons)"


def test_values_with_the_same_name_in_one_device_are_refused():
    v = {"name": "t", "permission": "r", "string": {"max": 1}}
    assert any("declared twice" in r for r in reasons_of(model({"name": "d", "values": [v, v]})))


def test_the_same_value_name_in_two_devices_is_fine():
    v = {"name": "t", "permission": "r", "string": {"max": 1}}
    decl = parse_model(model({"name": "a", "values": [v]}, {"name": "b", "values": [v]}))
    assert decl.value_count == 2


def test_a_description_holding_u0000_is_refused_with_its_path():
    doc = model({"name": "d", "description": "a\x00b", "values": [
        {"name": "v", "permission": "r", "description": "\x00", "string": {"max": 1}}]})
    assert set(reasons_of(doc)) >= {"devices[0].description: must not contain U+0000",
                                    "devices[0].values[0].description: must not contain U+0000"}
