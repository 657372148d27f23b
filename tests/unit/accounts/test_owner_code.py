"""Owner codes: printed in device.json, hashed into the certificate, claimable once."""

from __future__ import annotations

import datetime as dt
import json
import uuid

from cryptography import x509

from ca import profiles
from ca.bundles import new_owner_code
from ca.fastsign import FastDeviceSigner
from ca.keys import generate_key
from ca.profiles import build_hierarchy, device_template, device_validity, finish_device
from gateway.accounts import AccountStore
from gateway.accounts.ownercode import OWNER_CODE_OID, owner_hash_of
from gateway.accounts.store import code_hash
from tests.unit.accounts.test_store import PW

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_gateway_and_ca_agree_on_the_oid():
    assert OWNER_CODE_OID == profiles.OWNER_CODE_OID


def test_code_has_128_bits_and_its_hash_is_what_the_gateway_computes():
    code, digest = new_owner_code()
    assert len(code.replace("-", "")) == 32 and int(code.replace("-", ""), 16) >= 0
    assert code_hash(code) == digest
    assert code_hash(code.upper().replace("-", " ")) == digest  # as a person may type it
    assert new_owner_code()[0] != code


def test_fast_signer_and_builder_carry_the_same_extension():
    h = build_hierarchy(name="oc", now=NOW)
    nb, na = device_validity(h.issuing, NOW, 90)
    signer = FastDeviceSigner(h.issuing, nb, na)
    key, net = generate_key(), uuid.uuid4()
    _, digest = new_owner_code()
    fast = x509.load_der_x509_certificate(signer.sign(key.public_key(), net, None, digest))
    slow = finish_device(device_template(h.issuing, nb, na), h.issuing.key, key.public_key(),
                         net, fast.serial_number, digest)
    assert fast.tbs_certificate_bytes == slow.tbs_certificate_bytes
    assert owner_hash_of(fast) == digest
    assert not fast.extensions.get_extension_for_oid(OWNER_CODE_OID).critical
    plain = x509.load_der_x509_certificate(signer.sign(key.public_key(), net))
    assert owner_hash_of(plain) is None


def test_issued_bundle_prints_the_code_and_the_gateway_claims_with_it(ca_home, tmp_path):
    bundle = ca_home.issue_devices(tmp_path / "out")[0]
    info = json.loads((bundle.dir / "device.json").read_text())
    cert = x509.load_pem_x509_certificate((bundle.dir / "device.crt").read_bytes())
    digest = owner_hash_of(cert)
    assert digest == code_hash(info["owner_code"])
    store = AccountStore.in_folder(tmp_path / "data", now_us=lambda: 1)
    store.record_owner_code(info["uuid"], digest)
    owner = store.add("owner@example.org", PW, "owner")
    assert store.claim(owner.id, info["owner_code"]) == info["uuid"]
