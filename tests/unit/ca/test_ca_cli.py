"""`fleet-ca` through its `main(argv)`: every verb, and for every user mistake one line on
stderr and its own exit code, never a traceback."""

from __future__ import annotations

import io
import json
import sys
import uuid
from pathlib import Path

import pytest
from cahelpers import openssl_crl_serials, openssl_verify
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from ca.cli import main
from ca.errors import ExitCode


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv("FLEET_CA_HOME", raising=False)
    monkeypatch.delenv("FLEET_CA_PASSPHRASE", raising=False)


@pytest.fixture
def run(capsys):
    def run(*argv: str | Path, stdin: bytes | None = None):
        if stdin is not None:
            sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
        try:
            code = main([str(a) for a in argv])
        finally:
            sys.stdin = sys.__stdin__
        out, err = capsys.readouterr()
        return code, out, err

    return run


def one_error_line(err: str, code: int, expected: int, *fragments: str) -> None:
    assert code == expected, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleet-ca: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], err


@pytest.fixture
def home(tmp_path, run):
    path = tmp_path / "home"
    code, out, err = run("--home", path, "init", "--no-passphrase", "--name", "cli test")
    assert code == 0, err
    return path


def make_csr(key=None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
            .sign(key, hashes.SHA256()).public_bytes(Encoding.PEM))


# -- happy paths ---------------------------------------------------------------------------

def test_help_lists_exit_codes_and_every_verb_has_examples(run):
    code, out, _ = run("--help")
    assert code == 0 and "exit codes:" in out
    for c in ExitCode:
        assert f"  {int(c):>3}  " in out
    for verb in (["init"], ["issue", "device"], ["issue", "server"], ["issue", "operator"],
                 ["sign"], ["revoke"], ["crl"], ["list"], ["show"], ["verify"], ["renew"],
                 ["audit"], ["rotate-issuing"], ["issue", "claim"], ["issue", "registrar"],
                 ["claims"], ["serve"]):
        code, out, _ = run(*verb, "--help")
        assert code == 0 and "examples:" in out, verb


def test_init_without_passphrase_says_it_is_a_dev_ca(tmp_path, run):
    code, out, _ = run("init", "--no-passphrase", "--home", tmp_path / "h")
    assert code == 0 and "DEV CA" in out and "NOT encrypted" in out
    assert (tmp_path / "h" / "issuing.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY")


def test_home_comes_from_flag_before_or_after_the_verb_then_env_then_certs(
        tmp_path, run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run("init", "--no-passphrase")[0] == 0
    assert (tmp_path / "certs" / "root.crt").exists()
    monkeypatch.setenv("FLEET_CA_HOME", str(tmp_path / "env-home"))
    assert run("init", "--no-passphrase")[0] == 0
    assert (tmp_path / "env-home" / "root.crt").exists()
    code, out, _ = run("--home", tmp_path / "certs", "list", "--json")
    assert code == 0 and len(json.loads(out)) == 2
    code, out, _ = run("list", "--home", tmp_path / "certs", "--json")
    assert code == 0 and len(json.loads(out)) == 2
    code, out, _ = run("issue", "--home", tmp_path / "certs", "device", "--out", tmp_path / "b")
    assert code == 0


def test_init_with_a_passphrase_file_then_every_signing_verb_needs_it(tmp_path, run,
                                                                     monkeypatch):
    pf = tmp_path / "pass"
    pf.write_text("s3cret passphrase\n")
    h = tmp_path / "h"
    assert run("--home", h, "init", "--passphrase-file", pf)[0] == 0
    assert b"ENCRYPTED" in (h / "issuing.key").read_bytes()
    # no TTY here: no prompt, a clear error
    code, _, err = run("--home", h, "issue", "device", "--out", tmp_path / "b")
    one_error_line(err, code, ExitCode.PASSPHRASE, "no passphrase", "--passphrase-file")
    monkeypatch.setenv("FLEET_CA_PASSPHRASE", "wrong")
    code, _, err = run("--home", h, "crl")
    one_error_line(err, code, ExitCode.PASSPHRASE, "wrong passphrase")
    monkeypatch.setenv("FLEET_CA_PASSPHRASE", "s3cret passphrase")
    assert run("--home", h, "issue", "device", "--out", tmp_path / "b")[0] == 0
    monkeypatch.delenv("FLEET_CA_PASSPHRASE")
    assert run("--home", h, "crl", "--passphrase-file", pf)[0] == 0
    assert run("--home", h, "list")[0] == 0  # reading needs no passphrase


def test_init_without_any_passphrase_source_is_refused(tmp_path, run):
    code, _, err = run("--home", tmp_path / "h", "init")
    one_error_line(err, code, ExitCode.PASSPHRASE, "--no-passphrase")
    assert not (tmp_path / "h").exists()


def test_issue_device_prints_each_uuid_and_serial_and_writes_bundles(home, tmp_path, run):
    code, out, err = run("--home", home, "issue", "device", "--count", "3", "--days", "10",
                         "--out", tmp_path / "b", "--p12")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    for line in lines:
        net, serial = line.split()
        d = tmp_path / "b" / net
        assert json.loads((d / "device.json").read_text())["serial"] == serial
        assert (d / "device.p12").exists()
    assert "issued 3 device bundle(s)" in err and "\r" not in err  # no bar off a TTY


def test_issue_device_writes_a_label_sheet_with_every_owner_code(home, tmp_path, run):
    import re
    from html import unescape

    for count in ("4", "2"):  # two batches, two sheets, in one folder
        code, out, err = run("--home", home, "issue", "device", "--count", count,
                             "--out", tmp_path / "b")
        assert code == 0, err
        assert "owner-code labels:" in err
    sheets = sorted(tmp_path.glob("b-labels-*.html"))  # beside the bundles, not in them
    assert len(sheets) == 2
    assert all(s.stat().st_mode & 0o777 == 0o600 for s in sheets)
    labels: dict[str, str] = {}
    for sheet in sheets:
        page = sheet.read_text()
        assert "<script" not in page
        for net, body in re.findall(r'<div class="label" data-network="([^"]+)">(.*?)</div></div>',
                                    page):
            labels[net] = unescape(body)
    bundles = list((tmp_path / "b").iterdir())
    assert len(bundles) == 6 and all(d.is_dir() for d in bundles)
    assert set(labels) == {d.name for d in bundles}
    for d in bundles:
        info = json.loads((d / "device.json").read_text())
        assert info["owner_code"] in labels[d.name]
        assert info["serial"] in labels[d.name]


def test_issue_server_and_operator(home, tmp_path, run):
    code, out, err = run("--home", home, "issue", "server", "--dns", "localhost", "--ip",
                         "127.0.0.1", "--out", tmp_path / "s")
    assert code == 0, err
    assert openssl_verify(home, tmp_path / "s" / "server.crt").returncode == 0
    code, out, err = run("--home", home, "issue", "operator", "--name", "alice",
                         "--out", tmp_path / "o")
    assert code == 0, err
    assert {p.name for p in (tmp_path / "o").iterdir()} == {"operator.crt", "operator.key",
                                                            "ca.crt"}


def test_sign_reads_a_csr_from_a_file_or_stdin(home, tmp_path, run):
    (tmp_path / "d.csr").write_bytes(make_csr())
    code, _, err = run("--home", home, "sign", tmp_path / "d.csr", "--out", tmp_path / "d.crt")
    assert code == 0, err
    assert openssl_verify(home, tmp_path / "d.crt").returncode == 0
    net = uuid.uuid4()
    code, out, err = run("--home", home, "sign", "-", "--network", net, stdin=make_csr())
    assert code == 0, err
    leaf = x509.load_pem_x509_certificates(out.encode())[0]
    assert leaf.subject.rfc4514_string() == f"CN={net}"
    assert str(net) in err


def test_list_filters_by_kind_status_and_expiry(home, tmp_path, run):
    run("--home", home, "issue", "device", "--count", "2", "--out", tmp_path / "b")
    run("--home", home, "issue", "device", "--days", "5", "--out", tmp_path / "b")
    devices = json.loads(run("--home", home, "list", "--json", "--kind", "device")[1])
    assert len(devices) == 3
    run("--home", home, "revoke", devices[0]["serial"])
    revoked = json.loads(run("--home", home, "list", "--json", "--status", "revoked")[1])
    assert [r["serial"] for r in revoked] == [devices[0]["serial"]]
    assert revoked[0]["status"] == "revoked" and revoked[0]["revoked_at"]
    soon = json.loads(run("--home", home, "list", "--json", "--expiring-within", "30")[1])
    assert [r["kind"] for r in soon] == ["device"]
    code, out, _ = run("--home", home, "list")
    assert code == 0 and out.splitlines()[0].startswith("SERIAL") and len(out.splitlines()) == 6


def test_show_prints_a_record_as_text_json_or_pem(home, tmp_path, run):
    out = run("--home", home, "issue", "device", "--out", tmp_path / "b")[1]
    net, serial = out.split()
    code, text, _ = run("--home", home, "show", net)
    assert code == 0 and f"serial:      {serial}" in text
    assert json.loads(run("--home", home, "show", serial, "--json")[1])[0]["uuid"] == net
    pem = run("--home", home, "show", serial, "--pem")[1]
    assert x509.load_pem_x509_certificate(pem.encode()).serial_number == int(serial, 16)


def test_verify_says_ok_then_revoked(home, tmp_path, run):
    net = run("--home", home, "issue", "device", "--out", tmp_path / "b")[1].split()[0]
    crt = tmp_path / "b" / net / "device.crt"
    code, out, _ = run("--home", home, "verify", crt)
    assert code == 0 and out.startswith(f"OK CN={net}")
    run("--home", home, "revoke", net, "--reason", "key-compromise")
    code, _, err = run("--home", home, "verify", crt)
    one_error_line(err, code, ExitCode.REVOKED, "revoked", "key-compromise")


def test_renew_gives_a_new_certificate_for_the_same_network(home, tmp_path, run):
    net = run("--home", home, "issue", "device", "--out", tmp_path / "b")[1].split()[0]
    code, out, err = run("--home", home, "renew", net, "--out", tmp_path / "renewed")
    assert code == 0, err
    new = tmp_path / "renewed" / net / "device.crt"
    assert openssl_verify(home, new).returncode == 0
    (tmp_path / "d.csr").write_bytes(make_csr())
    code, _, err = run("--home", home, "renew", net, "--csr", tmp_path / "d.csr",
                       "--out", tmp_path / "from-csr.crt")
    assert code == 0, err
    records = json.loads(run("--home", home, "show", net, "--json")[1])
    assert len(records) == 3 and {r["uuid"] for r in records} == {net}
    code, _, err = run("--home", home, "renew", uuid.uuid4())
    one_error_line(err, code, ExitCode.NOT_FOUND, "no certificate for network")


# -- bad input: one line, one exit code each ------------------------------------------------

def test_missing_home(tmp_path, run):
    code, _, err = run("--home", tmp_path / "nope", "list")
    one_error_line(err, code, ExitCode.HOME_NOT_FOUND, "no CA home", "fleet-ca init")


def test_foreign_home(tmp_path, run):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "notes.txt").write_text("hello")
    code, _, err = run("--home", tmp_path / "f", "issue", "device")
    one_error_line(err, code, ExitCode.HOME_INVALID, "not a fleet-ca home")


def test_init_refuses_to_overwrite(home, run):
    before = (home / "root.key").read_bytes()
    code, _, err = run("--home", home, "init", "--no-passphrase")
    one_error_line(err, code, ExitCode.HOME_EXISTS, "refusing to overwrite")
    assert (home / "root.key").read_bytes() == before


def test_unknown_serial_and_unknown_uuid(home, run):
    code, _, err = run("--home", home, "revoke", "abcdef0123456789")
    one_error_line(err, code, ExitCode.NOT_FOUND, "abcdef0123456789")
    code, _, err = run("--home", home, "show", str(uuid.uuid4()))
    one_error_line(err, code, ExitCode.NOT_FOUND, "no certificate for network")


def test_malformed_and_forged_csrs(home, tmp_path, run):
    (tmp_path / "bad.csr").write_bytes(b"not a csr")
    code, _, err = run("--home", home, "sign", tmp_path / "bad.csr")
    one_error_line(err, code, ExitCode.BAD_CSR, "certificate signing request")
    key, other = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    der = x509.load_pem_x509_csr(make_csr(key)).public_bytes(Encoding.DER)
    spki = [k.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            for k in (key, other)]
    (tmp_path / "forged.csr").write_bytes(der.replace(spki[0], spki[1]))
    code, out, err = run("--home", home, "sign", tmp_path / "forged.csr")
    one_error_line(err, code, ExitCode.FORGED_CSR, "proof of possession")
    assert out == ""
    code, _, err = run("--home", home, "sign", tmp_path / "missing.csr")
    one_error_line(err, code, ExitCode.BAD_INPUT, "cannot read CSR")


def test_revoking_twice(home, tmp_path, run):
    net = run("--home", home, "issue", "device", "--out", tmp_path / "b")[1].split()[0]
    assert run("--home", home, "revoke", net)[0] == 0
    crl = (home / "crl.pem").read_bytes()
    code, _, err = run("--home", home, "revoke", net)
    one_error_line(err, code, ExitCode.ALREADY_REVOKED, "already revoked")
    assert (home / "crl.pem").read_bytes() == crl


def test_unwritable_output_folder(home, tmp_path, run):
    (tmp_path / "file").write_text("x")
    code, _, err = run("--home", home, "issue", "device", "--count", "3",
                       "--out", tmp_path / "file" / "sub")
    one_error_line(err, code, ExitCode.OUTPUT, "cannot create output folder")
    code, _, err = run("--home", home, "issue", "server", "--dns", "x.example",
                       "--out", tmp_path / "file")
    one_error_line(err, code, ExitCode.OUTPUT, "not a folder")
    devices = json.loads(run("--home", home, "list", "--json", "--kind", "device")[1])
    assert devices == []


@pytest.mark.parametrize("argv,fragment", [
    (["issue", "device", "--count", "0"], "--count"),
    (["issue", "device", "--days", "-3"], "--days"),
    (["issue", "device", "--network", "not-a-uuid"], "--network"),
    (["issue", "gizmo"], "invalid choice"),
    (["revoke"], "required"),
    (["revoke", "abc", "--reason", "bored"], "--reason"),
    (["list", "--status", "sleepy"], "--status"),
    ([], "required"),
])
def test_bad_command_lines_exit_2_with_one_line(home, run, argv, fragment):
    code, _, err = run("--home", home, *argv)
    one_error_line(err, code, ExitCode.USAGE, fragment)


@pytest.mark.parametrize("argv,expected,fragment", [
    (["issue", "server", "--out", "S"], ExitCode.BAD_INPUT, "--dns or --ip"),
    (["--home", "new", "init", "--name", "x" * 51], ExitCode.BAD_INPUT, "CA name"),
    (["issue", "server", "--dns", "bad name", "--out", "S"], ExitCode.BAD_INPUT, "DNS name"),
    (["issue", "server", "--ip", "1.2.3", "--out", "S"], ExitCode.BAD_INPUT, "IP address"),
    (["issue", "operator", "--name", "a b", "--out", "O"], ExitCode.BAD_INPUT, "operator name"),
    (["revoke", "not-hex!"], ExitCode.BAD_INPUT, "neither a network UUID nor a hex serial"),
    (["verify", "/nonexistent/cert.pem"], ExitCode.BAD_INPUT, "cannot read certificate"),
])
def test_bad_values_exit_with_bad_input(home, run, tmp_path, monkeypatch, argv, expected,
                                        fragment):
    monkeypatch.chdir(tmp_path)
    code, _, err = run("--home", home, *argv)
    one_error_line(err, code, expected, fragment)


def test_verify_refuses_garbage_and_a_foreign_certificate(home, tmp_path, run, make_odd_device):
    (tmp_path / "junk.pem").write_text("junk")
    code, _, err = run("--home", home, "verify", tmp_path / "junk.pem")
    one_error_line(err, code, ExitCode.BAD_INPUT, "not a PEM or DER certificate")
    foreign = make_odd_device("foreign-ca")
    code, _, err = run("--home", home, "verify", foreign.cert_path)
    one_error_line(err, code, ExitCode.VERIFY_FAILED, "does not verify")


def test_an_internal_error_is_one_line_and_exit_1(home, run, monkeypatch):
    import ca.cli

    def boom(args):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(ca.cli, "cmd_list", boom)
    code, _, err = run("--home", home, "list")
    one_error_line(err, code, ExitCode.INTERNAL, "internal error", "kaboom")


# -- the issue's "Done when", end to end ----------------------------------------------------

def test_done_when_100_bundles_verify_revoke_one_crl_and_list_show_it(tmp_path, run,
                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run("init", "--no-passphrase")[0] == 0
    code, out, err = run("issue", "device", "--count", "100", "--out", "B")
    assert code == 0, err
    crts = sorted(tmp_path.glob("B/*/device.crt"))
    assert len(crts) == 100
    r = openssl_verify(tmp_path / "certs", *crts)
    assert r.returncode == 0 and r.stdout.count(": OK") == 100, r.stdout + r.stderr
    victim_net, victim_serial = out.splitlines()[42].split()
    assert run("revoke", victim_net)[0] == 0
    assert openssl_crl_serials(tmp_path / "certs" / "crl.pem") == {int(victim_serial, 16)}
    listed = json.loads(run("list", "--json")[1])
    by_serial = {r["serial"]: r for r in listed}
    assert by_serial[victim_serial]["status"] == "revoked"
    assert by_serial[victim_serial]["uuid"] == victim_net
    assert sum(r["status"] == "valid" for r in listed) == 99 + 2  # + root and issuing


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_is_drawn_on_a_terminal_only(home, tmp_path, monkeypatch, capsys):
    import ca.cli

    with ca.cli._progress(100, "issuing") as progress:
        assert progress is None  # stderr is not a terminal under pytest
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    assert main(["--home", str(home), "issue", "device", "--count", "150",
                 "--out", str(tmp_path / "b")]) == 0
    drawn = tty.getvalue()
    assert "issuing" in drawn and "150/150" in drawn and "100%" in drawn
    assert len(capsys.readouterr().out.splitlines()) == 150


def test_a_bad_csr_or_unknown_serial_is_reported_before_any_passphrase(tmp_path, run):
    pf = tmp_path / "pass"
    pf.write_text("pw")
    h = tmp_path / "h"
    assert run("--home", h, "init", "--passphrase-file", pf)[0] == 0
    (tmp_path / "bad.csr").write_bytes(b"junk")
    code, _, err = run("--home", h, "sign", tmp_path / "bad.csr")  # no passphrase given
    one_error_line(err, code, ExitCode.BAD_CSR)
    code, _, err = run("--home", h, "revoke", "abc123")
    one_error_line(err, code, ExitCode.NOT_FOUND)


def test_a_damaged_issuing_key_is_a_damaged_home(home, tmp_path, run):
    (home / "issuing.key").write_text(
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    code, _, err = run("--home", home, "issue", "device", "--out", tmp_path / "b")
    one_error_line(err, code, ExitCode.HOME_INVALID, "issuing.key is damaged")


def test_a_locked_inventory_is_one_line_and_records_nothing(home, tmp_path, run, monkeypatch):
    import sqlite3

    import ca.inventory

    monkeypatch.setattr(ca.inventory, "BUSY_TIMEOUT_S", 0.05)
    blocker = sqlite3.connect(home / "inventory.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the write lock for good
    try:
        code, _, err = run("--home", home, "issue", "device", "--out", tmp_path / "b")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    one_error_line(err, code, ExitCode.INVENTORY, "database is locked", "nothing was recorded")
    assert not (tmp_path / "b").exists() or list((tmp_path / "b").iterdir()) == []


def test_p12_password_file_must_hold_a_password_and_needs_p12(home, tmp_path, run):
    (tmp_path / "empty").write_text("\n")
    code, _, err = run("--home", home, "issue", "device", "--p12", "--p12-password-file",
                       tmp_path / "empty", "--out", tmp_path / "b")
    one_error_line(err, code, ExitCode.BAD_INPUT, "is empty")
    (tmp_path / "pw").write_text("pw\n")
    code, _, err = run("--home", home, "issue", "device", "--p12-password-file", tmp_path / "pw",
                       "--out", tmp_path / "b")
    one_error_line(err, code, ExitCode.USAGE, "needs --p12")
