"""The simulator's model and readings, checked against the gateway's own validation: a
simulated device must never send a reading the gateway would refuse."""

from __future__ import annotations

import json
import random

import pytest
from firmware_sim.errors import ExitCode, ModelError
from firmware_sim.model import THERMOSTAT, Readings, ValueSpec, load_model, values_of
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ingest import check_data, parse_model


def _decls(model):
    decl = parse_model(json.dumps(model).encode())
    return {f"{d.name}/{v.name}": v for d in decl.devices for v in d.values}


def test_default_thermostat_is_a_declaration_the_gateway_accepts():
    decls = _decls(THERMOSTAT)
    assert {k: str(v.permission) for k, v in decls.items()} == {
        "thermostat/temperature": "r", "thermostat/humidity": "r", "thermostat/setpoint": "rw"}


@given(seed=st.integers(0, 2**32), ticks=st.integers(1, 300))
@settings(max_examples=60, deadline=None)
def test_thermostat_readings_are_always_accepted_by_the_gateway(seed, ticks):
    decls = _decls(THERMOSTAT)
    values = values_of(THERMOSTAT)
    readings = Readings(values, seed)
    for _ in range(ticks):
        for v in values:
            check_data(decls[v.topic], readings.next(v))  # raises ReadingRejected if not


@st.composite
def number_models(draw):
    step = draw(st.sampled_from([None, 0.1, 0.5, 1, 2.5, 0.01, 10]))
    lo = draw(st.integers(-1000, 1000)) * (step or 1)
    span = draw(st.integers(1, 500)) * (step or 1)
    spec = {"min": lo, "max": lo + span}
    if step is not None:
        spec["step"] = step
    name = draw(st.sampled_from(["temperature", "humidity", "level", "x"]))
    kind = draw(st.sampled_from(["number", "string", "xml"]))
    value = {"name": name, "permission": "r"}
    value[kind] = spec if kind == "number" else {"max": draw(st.integers(1, 40))}
    if kind == "xml":
        value[kind] = {}
    return {"devices": [{"name": "d", "values": [value]}]}


@given(model=number_models(), seed=st.integers(0, 1000))
@settings(max_examples=150, deadline=None)
def test_readings_of_any_declared_value_pass_the_gateways_checks(model, seed):
    decls = _decls(model)
    [value] = values_of(model)
    readings = Readings([value], seed)
    for _ in range(50):
        check_data(decls[value.topic], readings.next(value))


def test_readings_are_reproducible_by_seed_and_differ_between_seeds():
    values = values_of(THERMOSTAT)

    def run(seed):
        r = Readings(values, seed)
        return [r.next(v) for _ in range(20) for v in values if v.sensor]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_control_data_is_fitted_to_the_values_range_and_step():
    setpoint = ValueSpec("thermostat", "setpoint", "rw", "number",
                         {"min": 5, "max": 30, "step": 0.5})
    assert setpoint.coerce("22.5") == 22.5
    assert setpoint.coerce("22.3") == 22.5
    assert setpoint.coerce("99") == 30
    for bad in ("warm", "nan", "inf"):
        with pytest.raises(ValueError):
            setpoint.coerce(bad)


@pytest.mark.parametrize("content, says", [
    ("{not json", "not JSON"),
    ('{"values": []}', "not a declaration"),
    ('{"devices": [{"values": [{"name": "x"}]}]}', "not a declaration"),
])
def test_bad_model_files_are_a_model_error_naming_the_file(tmp_path, content, says):
    path = tmp_path / "model.json"
    path.write_text(content)
    with pytest.raises(ModelError) as info:
        load_model(path)
    assert says in str(info.value) and str(path) in str(info.value)
    assert info.value.exit_code == ExitCode.MODEL


def test_missing_model_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="cannot read"):
        load_model(tmp_path / "nope.json")


def test_backoff_doubles_with_jitter_and_is_capped():
    from firmware_sim.device import Backoff

    rng = random.Random(1)
    b = Backoff(base=0.5, cap=8.0)
    for attempt, full in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 8.0),
                          (1000, 8.0)]:
        delays = [b.delay(attempt, rng) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays)
        assert max(delays) - min(delays) > full / 4  # jittered, not one fixed value
