"""The audit trail: every act of the CA is one hash-chained entry, written in the act's own
transaction; `fleet-ca audit --verify` names the first entry that was edited, removed or
reordered in the SQLite file."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ca import audit
from ca.cli import main
from ca.errors import AuditBrokenError, ExitCode
from ca.store import CAHome

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv("FLEET_CA_HOME", raising=False)
    monkeypatch.delenv("FLEET_CA_PASSPHRASE", raising=False)


@pytest.fixture
def home(tmp_path):
    h = CAHome.init(tmp_path / "home", passphrase=None, now=NOW)
    yield h
    h.close()


def _csr() -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "d")]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(Encoding.PEM)


def _entries(home: CAHome) -> list[audit.AuditEntry]:
    return list(audit.entries(home.inventory.connection))


def test_every_act_of_the_ca_is_one_entry_naming_its_subject(home, tmp_path):
    bundles = home.issue_devices(tmp_path / "b", count=2, now=NOW)
    home.issue_server(tmp_path / "s", dns=["gw.example"], now=NOW)
    net = bundles[0].network_uuid
    renewed = home.renew(net, csr_data=_csr(), now=NOW)
    home.revoke(str(net), reason="key-compromise", now=NOW)
    acts = [(e.action, e.subject, e.details.get("kind")) for e in _entries(home)]
    assert acts[:3] == [("issue", format(home.root_cert.serial_number, "x"), "root"),
                        ("issue", format(home.issuing_cert.serial_number, "x"), "issuing"),
                        ("crl", format(home.issuing_cert.serial_number, "x"), None)]
    serials = {format(b.serial, "x") for b in bundles}
    assert {s for a, s, k in acts[3:5]} == serials and {a for a, _, _ in acts[3:5]} == {"issue"}
    assert acts[5][0::2] == ("issue", "server")
    assert acts[6] == ("renew", format(renewed.serial, "x"), "device")
    revoked = [e for e in _entries(home) if e.action == "revoke"]
    assert {e.subject for e in revoked} == {format(bundles[0].serial, "x"),
                                             format(renewed.serial, "x")}
    assert all(e.details["reason"] == "key-compromise" for e in revoked)
    assert all(e.details["network"] == str(net) for e in revoked)
    assert _entries(home)[-1].action == "crl"
    assert audit.verify(home.inventory.connection) == len(acts)


def test_entries_chain_each_hash_to_the_previous_one(home, tmp_path):
    home.issue_devices(tmp_path / "b", count=3, now=NOW)
    es = _entries(home)
    assert es[0].prev_hash == audit.GENESIS
    for prev, cur in zip(es, es[1:], strict=False):
        assert cur.prev_hash == prev.hash and cur.seq == prev.seq + 1


def test_a_failed_act_leaves_no_entry(home, tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "server.key").write_text("there")
    before = len(_entries(home))
    with pytest.raises(Exception):  # noqa: B017 - OutputError; the point is what is left
        home.issue_server(tmp_path / "s", now=NOW)
    assert len(_entries(home)) == before


def test_the_actor_is_who_opened_the_home(tmp_path):
    CAHome.init(tmp_path / "h", passphrase=None, now=NOW).close()
    with CAHome.open(tmp_path / "h", actor="alice") as h:
        h.issue_devices(tmp_path / "b", now=NOW)
        assert _entries(h)[-1].actor == "alice"


@pytest.mark.parametrize("column,value", [
    ("subject", "0"), ("details", '{"kind":"server"}'), ("at", "2020-01-01T00:00:00Z"),
    ("actor", "mallory"), ("hash", "f" * 64),
])
def test_verify_names_the_first_edited_entry(home, tmp_path, column, value):
    home.issue_devices(tmp_path / "b", count=3, now=NOW)
    db = home.path / "inventory.db"
    with sqlite3.connect(db) as c:
        c.execute(f"UPDATE audit SET {column} = ? WHERE seq = 5", (value,))
    with pytest.raises(AuditBrokenError) as exc:
        audit.verify(home.inventory.connection)
    assert exc.value.seq == 5


def test_verify_detects_a_deleted_entry_and_a_rechained_one(home, tmp_path):
    home.issue_devices(tmp_path / "b", count=3, now=NOW)
    conn = home.inventory.connection
    conn.execute("DELETE FROM audit WHERE seq = 4")
    with pytest.raises(AuditBrokenError, match="entry 4 is missing") as exc:
        audit.verify(conn)
    assert exc.value.seq == 5
    # Renumbering to close the gap breaks the next entry's hash (seq is hashed).
    conn.execute("UPDATE audit SET seq = seq - 1 WHERE seq > 4")
    with pytest.raises(AuditBrokenError) as exc:
        audit.verify(conn)
    assert exc.value.seq == 4


def test_cli_audit_lists_json_and_verifies_exit_16_on_a_flipped_byte(tmp_path, capsys):
    h = tmp_path / "home"
    assert main(["--home", str(h), "init", "--no-passphrase"]) == 0
    assert main(["--home", str(h), "issue", "device", "--count", "2",
                 "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    assert main(["--home", str(h), "audit", "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["action"] for x in lines] == ["issue", "issue", "crl", "issue", "issue"]
    assert all(str(uuid.UUID(x["details"]["network"])) for x in lines[3:])
    assert main(["--home", str(h), "audit", "--verify"]) == 0
    assert "5 entries" in capsys.readouterr().out
    # One byte of one stored field changed, as an attacker with the file would.
    with sqlite3.connect(h / "inventory.db") as c:
        subject = c.execute("SELECT subject FROM audit WHERE seq = 4").fetchone()[0]
        flipped = subject[:-1] + ("0" if subject[-1] != "0" else "1")
        c.execute("UPDATE audit SET subject = ? WHERE seq = 4", (flipped,))
    for spelling in (["--verify"], ["verify"]):  # `verify` as `fleet-gateway audit` says it
        code = main(["--home", str(h), "audit", *spelling])
        err = capsys.readouterr().err
        assert code == ExitCode.AUDIT_BROKEN == 16
        assert err.strip() == ("fleet-ca: audit trail broken at entry 4: "
                               "its contents do not match its hash")


def test_cli_audit_since_filters_by_time(tmp_path, capsys):
    h = tmp_path / "home"
    CAHome.init(h, passphrase=None, now=NOW).close()
    with CAHome.open(h) as home:
        home.write_crl(now=NOW + dt.timedelta(days=2))
    capsys.readouterr()
    assert main(["--home", str(h), "audit", "--since", "2026-03-02"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and " crl " in out[0] and "number=2" in out[0]


def test_an_inventory_from_before_the_audit_trail_is_migrated(tmp_path):
    h = CAHome.init(tmp_path / "home", passphrase=None, now=NOW)
    h.close()
    with sqlite3.connect(tmp_path / "home" / "inventory.db") as c:
        # back to schema 1
        c.executescript("DROP TABLE audit; DROP TABLE claims; DROP TABLE supersede;")
        c.execute("PRAGMA user_version = 1")
    with CAHome.open(tmp_path / "home") as home:
        assert home.inventory.schema_version == 2
        home.write_crl(now=NOW)
        assert [e.seq for e in _entries(home)] == [1]
        assert audit.verify(home.inventory.connection) == 1
