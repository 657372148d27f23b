"""Hypothesis: whatever a device sends, validation answers with a value or its own error."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ingest import (
    DeclarationRejected,
    NumberType,
    Permission,
    ReadingRejected,
    StringType,
    ValueDecl,
    XmlType,
    check_data,
    parse_model,
    parse_readings,
)
from gateway.model.declarations import value_decl_from_json

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20,
)
type_specs = st.one_of(
    st.fixed_dictionaries({"number": st.fixed_dictionaries(
        {"min": json_scalars, "max": json_scalars},
        optional={"step": json_scalars, "unit": json_scalars})}),
    st.fixed_dictionaries({"string": st.fixed_dictionaries({}, optional={"max": json_scalars})}),
    st.fixed_dictionaries({"blob": st.fixed_dictionaries({}, optional={"max": json_scalars})}),
    st.fixed_dictionaries({"xml": st.none() | st.fixed_dictionaries(
        {}, optional={"max": json_scalars})}),
    json_values,
)
value_docs = st.builds(
    lambda base, spec: {**base, **spec} if isinstance(spec, dict) else base,
    st.fixed_dictionaries({}, optional={
        "name": st.text(max_size=10) | json_scalars,
        "permission": st.sampled_from(["r", "w", "rw", "x"]) | json_scalars,
        "description": json_scalars, "period": json_scalars,
    }),
    type_specs,
)
model_docs = st.fixed_dictionaries({"devices": st.lists(st.fixed_dictionaries(
    {}, optional={"name": st.text(max_size=10) | json_scalars,
                  "values": st.lists(value_docs, max_size=4) | json_values,
                  "description": json_scalars}), max_size=4)}) | json_values


@settings(max_examples=300, deadline=None)
@given(model_docs)
def test_any_declaration_is_accepted_or_rejected_with_reasons(doc):
    payload = json.dumps(doc).encode()
    try:
        model = parse_model(payload)
    except DeclarationRejected as exc:
        assert exc.reasons and all(isinstance(r, str) and r for r in exc.reasons)
        return
    for dev in model.devices:
        for v in dev.values:  # whatever was accepted survives the store's JSON round trip
            assert value_decl_from_json(json.loads(json.dumps(v.to_json()))) == v


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_as_a_model_never_crash(payload):
    try:
        parse_model(payload)
    except DeclarationRejected as exc:
        assert exc.reasons


readings = st.fixed_dictionaries({}, optional={
    "data": json_values, "timestamp": st.text(max_size=30) | json_scalars})
report_docs = st.one_of(
    readings,
    st.fixed_dictionaries({"reports": st.lists(readings, max_size=5) | json_values}),
    json_values,
)
DECLS = [
    ValueDecl("n", NumberType(min=-5, max=5, step=0.25), Permission.R),
    ValueDecl("s", StringType(max=5), Permission.R),
    ValueDecl("x", XmlType(max=100), Permission.R),
]


def _check_all(payload: bytes) -> None:
    try:
        parsed = parse_readings(payload)
    except ReadingRejected as exc:
        assert exc.reason
        return
    for reading in parsed.readings:
        if isinstance(reading, ReadingRejected):
            continue
        assert reading.timestamp is None or reading.timestamp.utcoffset().total_seconds() == 0
        for d in DECLS:
            try:
                stored = check_data(d, reading.data)
            except ReadingRejected:
                continue
            assert isinstance(stored, str)
            stored.encode("utf-8")  # storable as SQLite TEXT


@settings(max_examples=300, deadline=None)
@given(report_docs)
def test_any_report_document_is_stored_text_or_a_rejection(doc):
    _check_all(json.dumps(doc).encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=50).map(str.encode))
def test_any_report_bytes_are_stored_text_or_a_rejection(payload):
    _check_all(payload)


names = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs"),
                                       blacklist_characters="/+#$"),
                min_size=1, max_size=20)
finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


@st.composite
def valid_values(draw):
    kind = draw(st.sampled_from(["number", "string", "blob", "xml"]))
    doc = {"name": draw(names), "permission": draw(st.sampled_from(["r", "w", "rw"]))}
    if kind == "number":
        lo, hi = sorted([draw(finite), draw(finite)])
        spec = {"min": lo, "max": hi}
        if draw(st.booleans()):
            spec["step"] = draw(st.floats(min_value=0.001, max_value=1000))
        if draw(st.booleans()):
            spec["unit"] = draw(st.text(st.characters(blacklist_categories=("Cs",),
                                                      blacklist_characters="\x00"),
                                        max_size=5))  # U+0000: refused (no store holds it)
        doc["number"] = spec
    else:
        doc[kind] = {"max": draw(st.integers(1, 60000))}
    if draw(st.booleans()):
        doc["period"] = draw(st.floats(min_value=0.1, max_value=1e6))
    return doc


valid_models = st.lists(
    st.fixed_dictionaries({"name": names, "values": st.lists(valid_values(), max_size=5,
                                                             unique_by=lambda v: v["name"])}),
    max_size=5, unique_by=lambda d: d["name"]).map(lambda devs: {"devices": devs})


@settings(max_examples=200, deadline=None)
@given(valid_models)
def test_every_valid_declaration_is_accepted_whole_and_round_trips(doc):
    model = parse_model(json.dumps(doc).encode())
    assert [d.name for d in model.devices] == [d["name"] for d in doc["devices"]]
    for dev, raw in zip(model.devices, doc["devices"], strict=True):
        assert len(dev.values) == len(raw["values"])
        for v, raw_v in zip(dev.values, raw["values"], strict=True):
            assert v.to_json() == raw_v
