"""The data key: AES-GCM sealing, the lookup hash, the key file's mode, rotation."""

from __future__ import annotations

import os
import stat

import pytest

from gateway.accounts import DataKey, DataKeyError


def test_key_file_is_created_0600(tmp_path):
    key = DataKey.open(tmp_path / "data.key")
    assert stat.S_IMODE((tmp_path / "data.key").stat().st_mode) == 0o600
    assert DataKey.open(tmp_path / "data.key").current_id == key.current_id


def test_open_key_file_is_refused(tmp_path):
    DataKey.open(tmp_path / "data.key")
    os.chmod(tmp_path / "data.key", 0o644)
    with pytest.raises(DataKeyError, match="chmod 600"):
        DataKey.open(tmp_path / "data.key")


def test_missing_key_without_create_is_an_error(tmp_path):
    with pytest.raises(DataKeyError, match="no data key"):
        DataKey.open(tmp_path / "data.key", create=False)


def test_round_trip_and_ciphertext_hides_plaintext(tmp_path):
    key = DataKey.open(tmp_path / "data.key")
    blob = key.encrypt(b"ada@example.org", b"email")
    assert b"ada" not in blob
    assert key.decrypt(blob, b"email") == b"ada@example.org"
    assert key.encrypt(b"ada@example.org", b"email") != blob  # fresh nonce each time


def test_wrong_key_cannot_decrypt(tmp_path):
    mine = DataKey.open(tmp_path / "a" / "data.key")
    other = DataKey.open(tmp_path / "b" / "data.key")
    blob = mine.encrypt(b"secret", b"email")
    with pytest.raises(DataKeyError):
        other.decrypt(blob, b"email")
    # Same key id, different secret: the tag check refuses it.
    (tmp_path / "b" / "data.key").write_text(
        mine.current_id + " " + (tmp_path / "b" / "data.key").read_text().split()[1] + "\n")
    forged = DataKey.open(tmp_path / "b" / "data.key")
    with pytest.raises(DataKeyError, match="does not open"):
        forged.decrypt(blob, b"email")


def test_purpose_binds_ciphertext_to_its_column(tmp_path):
    key = DataKey.open(tmp_path / "data.key")
    with pytest.raises(DataKeyError):
        key.decrypt(key.encrypt(b"x", b"email"), b"details")


def test_tampered_ciphertext_is_refused(tmp_path):
    key = DataKey.open(tmp_path / "data.key")
    blob = bytearray(key.encrypt(b"hello", b"email"))
    blob[-1] ^= 1
    with pytest.raises(DataKeyError):
        key.decrypt(bytes(blob), b"email")


def test_lookup_is_keyed_and_case_insensitive(tmp_path):
    a = DataKey.open(tmp_path / "a" / "data.key")
    b = DataKey.open(tmp_path / "b" / "data.key")
    assert a.lookup("Ada@Example.org ") == a.lookup("ada@example.org")
    assert a.lookup("ada@example.org") != b.lookup("ada@example.org")


def test_rotation_keeps_old_ciphertexts_readable_until_dropped(tmp_path):
    old = DataKey.open(tmp_path / "data.key")
    blob = old.encrypt(b"x", b"email")
    new = old.rotate()
    assert new.current_id != old.current_id
    assert new.decrypt(blob, b"email") == b"x"
    only_new = new.drop_old()
    with pytest.raises(DataKeyError, match="not in"):
        only_new.decrypt(blob, b"email")
    assert stat.S_IMODE((tmp_path / "data.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("text", ["nonsense", "zz AAAA", "00000000 QUFB"])
def test_malformed_key_file_is_one_clear_error(tmp_path, text):
    path = tmp_path / "data.key"
    path.write_text(text + "\n")
    os.chmod(path, 0o600)
    with pytest.raises(DataKeyError, match="data.key:1"):
        DataKey.open(path)
