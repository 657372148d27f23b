"""The CA home on disk: layout, permissions, passphrases, foreign homes, migrations,
bundles, nothing half-written, and two processes issuing at once."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import stat
import uuid

import pytest
from cahelpers import openssl_verify
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import pkcs12

from ca.errors import (
    BadInputError,
    HomeExistsError,
    HomeInvalidError,
    HomeNotFoundError,
    OutputError,
    PassphraseError,
)
from ca.inventory import APPLICATION_ID, MIGRATIONS, Inventory
from ca.store import CAHome, parse_selector
from ca.verify import load_pem_chain


def mode(p):
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def dev_home(tmp_path):
    h = CAHome.init(tmp_path / "home", name="store test", passphrase=None)
    yield h
    h.close()


def test_init_writes_the_documented_files_with_private_keys_0600(dev_home):
    names = {p.name for p in dev_home.path.iterdir()}
    assert names == {"root.crt", "root.key", "issuing.crt", "issuing.key", "ca-chain.pem",
                     "crl.pem", "inventory.db"}
    assert mode(dev_home.path / "root.key") == 0o600
    assert mode(dev_home.path / "issuing.key") == 0o600
    chain = load_pem_chain((dev_home.path / "ca-chain.pem").read_bytes())
    assert chain == [dev_home.issuing_cert, dev_home.root_cert]  # issuing then root
    kinds = [r.kind for r in dev_home.inventory.select(now=dev_home.root_cert.not_valid_before_utc)]
    assert sorted(kinds) == ["issuing", "root"]


def test_init_with_a_passphrase_encrypts_both_ca_keys(tmp_path):
    home = CAHome.init(tmp_path / "h", passphrase=b"correct horse")
    for name in ("root.key", "issuing.key"):
        assert (home.path / name).read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY")
    home.close()
    reopened = CAHome.open(tmp_path / "h")
    assert reopened.key_encrypted
    assert len(reopened.inventory.select(now=reopened.root_cert.not_valid_before_utc)) == 2
    with pytest.raises(PassphraseError, match="no passphrase"):
        reopened.issue_devices(tmp_path / "b")
    with pytest.raises(PassphraseError, match="wrong passphrase"):
        reopened.unlock(b"wrong")
    reopened.unlock(b"correct horse")
    assert len(reopened.issue_devices(tmp_path / "b")) == 1


def test_init_refuses_to_overwrite_anything(tmp_path, dev_home):
    before = (dev_home.path / "issuing.key").read_bytes()
    with pytest.raises(HomeExistsError):
        CAHome.init(dev_home.path, passphrase=None)
    assert (dev_home.path / "issuing.key").read_bytes() == before
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(HomeExistsError):
        CAHome.init(tmp_path / "a-file", passphrase=None)
    (tmp_path / "empty").mkdir()
    CAHome.init(tmp_path / "empty", passphrase=None).close()  # an empty folder is fine
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_root_key_may_go_offline_after_init(dev_home, tmp_path):
    (dev_home.path / "root.key").unlink()
    home = CAHome.open(dev_home.path)
    bundle = home.issue_devices(tmp_path / "b")[0]
    assert openssl_verify(home.path, bundle.cert_path).returncode == 0
    home.close()


def test_missing_homes_and_foreign_folders_are_told_apart(tmp_path, dev_home):
    with pytest.raises(HomeNotFoundError):
        CAHome.open(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HomeNotFoundError):
        CAHome.open(tmp_path / "empty")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(HomeInvalidError, match="not a fleet-ca home"):
        CAHome.open(tmp_path / "photos")


def _copy_home(src, dst):
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_foreign_or_damaged_inventories_are_refused(tmp_path, dev_home):
    home = _copy_home(dev_home.path, tmp_path / "h1")
    (home / "inventory.db").unlink()
    conn = sqlite3.connect(home / "inventory.db")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(HomeInvalidError, match="foreign database"):
        CAHome.open(home)
    (home / "inventory.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(HomeInvalidError, match="not a fleet-ca inventory"):
        CAHome.open(home)
    (home / "inventory.db").unlink()
    with pytest.raises(HomeInvalidError, match="no inventory"):
        CAHome.open(home)


def test_an_issuing_ca_from_another_root_is_refused(tmp_path, dev_home):
    other = CAHome.init(tmp_path / "other", passphrase=None)
    home = _copy_home(dev_home.path, tmp_path / "mixed")
    (home / "issuing.crt").write_bytes((other.path / "issuing.crt").read_bytes())
    with pytest.raises(HomeInvalidError, match="not signed by"):
        CAHome.open(home)
    other.close()


def test_inventory_migrates_forward_and_refuses_a_newer_schema(tmp_path):
    path = tmp_path / "inv.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.close()
    inv = Inventory.open(path)  # schema 0 -> latest
    assert inv.schema_version == len(MIGRATIONS)
    inv.close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(HomeInvalidError, match="newer"):
        Inventory.open(path)


def test_device_bundle_holds_key_chain_root_and_json(dev_home, tmp_path):
    [b] = dev_home.issue_devices(tmp_path / "out", days=30)
    assert b.dir == tmp_path / "out" / str(b.network_uuid)
    assert sorted(p.name for p in b.dir.iterdir()) == [
        "ca.crt", "device.crt", "device.json", "device.key"]
    assert mode(b.key_path) == 0o600
    leaf, issuing = load_pem_chain(b.cert_path.read_bytes())
    assert issuing == dev_home.issuing_cert
    assert b.ca_path.read_bytes() == dev_home.root_pem
    info = json.loads(b.json_path.read_text())
    assert info == {
        "uuid": str(b.network_uuid), "serial": f"{leaf.serial_number:x}",
        "fingerprint": leaf.fingerprint(hashes.SHA256()).hex(),
        "not_before": info["not_before"], "not_after": b.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "owner_code": info["owner_code"],  # its hash in the certificate: tests/unit/accounts
    }
    record = dev_home.find(b.serial)[0]
    assert (record.kind, record.network_uuid, record.status) == ("device", b.network_uuid, "valid")
    assert record.certificate() == leaf


def test_p12_bundle_opens_with_its_password(dev_home, tmp_path):
    [b] = dev_home.issue_devices(tmp_path / "out", p12=True, p12_password=b"s3cret")
    assert mode(b.p12_path) == 0o600
    key, cert, extra = pkcs12.load_key_and_certificates(b.p12_path.read_bytes(), b"s3cret")
    assert cert.serial_number == b.serial
    assert key.public_key() == cert.public_key()
    assert extra == [dev_home.issuing_cert]


def test_many_bundles_over_worker_processes_are_all_distinct_and_recorded(dev_home, tmp_path):
    bundles = dev_home.issue_devices(tmp_path / "out", count=1200, workers=2)
    assert len({b.serial for b in bundles}) == 1200
    assert len({b.network_uuid for b in bundles}) == 1200
    assert len([p for p in (tmp_path / "out").iterdir()]) == 1200
    assert dev_home.inventory.count() == 1202
    r = openssl_verify(dev_home.path, *(b.cert_path for b in bundles[::100]))
    assert r.returncode == 0, r.stderr


def test_a_fixed_network_gets_one_bundle_and_is_never_overwritten(dev_home, tmp_path):
    net = uuid.uuid4()
    [b] = dev_home.issue_devices(tmp_path / "out", network=net)
    assert b.network_uuid == net
    with pytest.raises(OutputError, match="already exists"):
        dev_home.issue_devices(tmp_path / "out", network=net)
    with pytest.raises(BadInputError, match="--count 1"):
        dev_home.issue_devices(tmp_path / "o2", network=net, count=2)


def test_an_unwritable_output_leaves_no_record_and_no_file(dev_home, tmp_path):
    (tmp_path / "plain-file").write_text("x")
    n = dev_home.inventory.count()
    with pytest.raises(OutputError):
        dev_home.issue_devices(tmp_path / "plain-file" / "out", count=5)
    with pytest.raises(OutputError):
        dev_home.issue_server(tmp_path / "plain-file", dns=["localhost"])
    assert dev_home.inventory.count() == n


def test_a_failed_inventory_commit_leaves_no_bundle_behind(dev_home, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(Inventory, "add_rows", fail)
    with pytest.raises(sqlite3.OperationalError):
        dev_home.issue_devices(tmp_path / "out", count=20)
    assert list((tmp_path / "out").iterdir()) == []


def test_server_and_operator_files_are_never_overwritten(dev_home, tmp_path):
    s = dev_home.issue_server(tmp_path / "s", dns=["gw.example"], ips=["10.0.0.1"])
    assert mode(s.key_path) == 0o600
    with pytest.raises(OutputError, match="already exists"):
        dev_home.issue_server(tmp_path / "s", dns=["gw.example"])
    o = dev_home.issue_operator(tmp_path / "o", name="bob")
    assert o.ca_path.read_bytes() == dev_home.root_pem
    with pytest.raises(OutputError, match="already exists"):
        dev_home.issue_operator(tmp_path / "o", name="bob")
    kinds = sorted(r.kind for r in dev_home.inventory.select(
        now=dev_home.root_cert.not_valid_before_utc, kind=None))
    assert kinds == ["issuing", "operator", "root", "server"]


@pytest.mark.parametrize("text,expected", [
    ("5FB0C8EB15B7A541", 0x5FB0C8EB15B7A541),
    ("5f:b0:c8", 0x5FB0C8),
    ("0x0a", 10),
    ("urn:uuid:12345678-1234-5678-1234-567812345678",
     uuid.UUID("12345678-1234-5678-1234-567812345678")),
    ("12345678-1234-5678-1234-567812345678", uuid.UUID("12345678-1234-5678-1234-567812345678")),
])
def test_selectors_parse_as_uuid_or_hex_serial(text, expected):
    assert parse_selector(text) == expected


@pytest.mark.parametrize("text", ["", "zz", "-5", "0", "12345678-1234-5678-1234-56781234567g"])
def test_bad_selectors_are_refused(text):
    with pytest.raises(BadInputError):
        parse_selector(text)


# -- two processes at once -----------------------------------------------------------------

def _issue_worker(home_path, out, barrier, revoke_serial):
    home = CAHome.open(home_path)
    barrier.wait()
    for _ in range(40):  # many small transactions, to interleave with the other process
        home.issue_devices(out, count=1)
    home.issue_devices(out, count=150)
    home.revoke(revoke_serial, reason="key-compromise")
    home.close()


def test_two_processes_issuing_at_once_corrupt_nothing_and_reuse_no_serial(dev_home, tmp_path):
    victims = dev_home.issue_devices(tmp_path / "victims", count=2)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_issue_worker,
                    args=(dev_home.path, tmp_path / f"out{i}", barrier, victims[i].serial))
        for i in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    conn = sqlite3.connect(dev_home.path / "inventory.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    serials = [row[0] for row in conn.execute("SELECT serial FROM certificates")]
    conn.close()
    assert len(serials) == len(set(serials)) == 2 + 2 + 2 * 190
    for i in range(2):
        dirs = list((tmp_path / f"out{i}").iterdir())
        assert len(dirs) == 190 and all(d.name.count("-") == 4 for d in dirs)
    crl = x509.load_pem_x509_crl((dev_home.path / "crl.pem").read_bytes())
    assert {e.serial_number for e in crl} == {v.serial for v in victims}
