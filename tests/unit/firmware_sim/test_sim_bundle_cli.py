"""Bundles, addresses and the command line's answers to bad input (one line, a distinct
exit code, never a traceback), and the rule that the simulator never imports the gateway."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from firmware_sim.bundle import find_bundles, load_bundle, parse_hostport
from firmware_sim.cli import main
from firmware_sim.errors import BundleError

SIM = shutil.which("firmware-sim", path=str(Path(sys.executable).parent)) or "firmware-sim"


def test_importing_the_simulator_loads_no_gateway_module():
    code = ("import sys, firmware_sim, firmware_sim.cli, firmware_sim.attack, "
            "firmware_sim.fleet, firmware_sim.probe, firmware_sim.forge\n"
            "print(sorted({m.split('.')[0] for m in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    loaded = eval(out)  # a list literal we printed
    assert "gateway" not in loaded and "firmware_sim" in loaded


def test_bundle_names_the_network_of_its_certificate_not_its_folder(device_bundle, tmp_path):
    moved = tmp_path / "renamed"
    shutil.copytree(device_bundle.dir, moved)
    bundle = load_bundle(moved)
    assert bundle.network == device_bundle.network_uuid
    assert bundle.name == str(device_bundle.network_uuid)


def test_incomplete_bundle_names_the_missing_files(device_bundle, tmp_path):
    broken = tmp_path / "b"
    shutil.copytree(device_bundle.dir, broken)
    (broken / "device.key").unlink()
    with pytest.raises(BundleError, match="missing device.key"):
        load_bundle(broken)
    with pytest.raises(BundleError, match="missing device.key"):
        find_bundles(tmp_path)  # a fleet with one broken bundle names it


def test_find_bundles_takes_count_in_name_order(ca_home, tmp_path):
    ca_home.issue_devices(tmp_path / "many", count=4)
    found = find_bundles(tmp_path / "many", count=3)
    names = sorted(p.name for p in (tmp_path / "many").iterdir() if p.is_dir())
    assert [b.dir.name for b in found] == names[:3]
    with pytest.raises(BundleError, match="no bundle"):
        find_bundles(tmp_path)  # folders without device.crt directly inside


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:8883", ("127.0.0.1", 8883)),
    ("gw.example.net", ("gw.example.net", 8883)),
    ("[::1]:1883", ("::1", 1883)),
    ("::1", ("::1", 8883)),
])
def test_gateway_addresses_parse(text, expected):
    assert parse_hostport(text) == expected


@pytest.mark.parametrize("text", ["h:0", "h:65536", "h:x"])
def test_bad_gateway_ports_are_refused(text):
    with pytest.raises(ValueError):
        parse_hostport(text)


@pytest.mark.parametrize("argv, code, says", [
    (["run", "--bundle", "/nonexistent/b"], 3, "not a folder"),
    (["fleet", "--bundles", "/nonexistent"], 3, "not a folder"),
    (["attack", "--bundle", "/nonexistent/b"], 3, "not a folder"),
])
def test_missing_bundles_are_one_line_and_exit_3(argv, code, says, capsys):
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("firmware-sim: error:") and says in err[0]


def test_bad_model_file_is_exit_4(device_bundle, tmp_path, capsys):
    model = tmp_path / "m.json"
    model.write_text("[1, 2")
    assert main(["run", "--bundle", str(device_bundle.dir), "--model", str(model)]) == 4
    assert "not JSON" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["run"], ["run", "--bundle", "b", "--rate", "0"], ["run", "--bundle", "b", "--rate", "x"],
    ["fleet", "--bundles", "b", "--gateway", "h:99999"], ["nonsense"],
])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_attack_refuses_a_victim_that_is_not_a_uuid(device_bundle, capsys):
    assert main(["attack", "--bundle", str(device_bundle.dir), "--victim", "bob"]) == 2
    assert "is not a UUID" in capsys.readouterr().err


def test_attack_refuses_to_attack_its_own_network(device_bundle, capsys):
    argv = ["attack", "--bundle", str(device_bundle.dir),
            "--victim", str(device_bundle.network_uuid)]
    assert main(argv) == 2
    assert "same network" in capsys.readouterr().err


def test_help_lists_the_three_verbs_and_exit_codes():
    out = subprocess.run([SIM, "--help"], capture_output=True, text=True, check=True).stdout
    assert all(v in out for v in ("run", "fleet", "attack", "Exit codes"))
