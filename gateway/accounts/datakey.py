"""The data key: AES-256-GCM for personal data at rest, and the key of the lookup hash.

The key file (`<data>/data.key`, mode 0600, created on first use) holds one key per line as
`<key id> <base64 of 32 bytes>`; the first line is the current key (it encrypts), the others
are older keys still able to decrypt during a rotation. A ciphertext is
`key id (4 bytes) || nonce (12 bytes) || AES-GCM(ciphertext || tag)`, with the field's purpose
(e.g. b"email") as associated data, so a ciphertext moved to another column does not open.

The lookup hash (to find an account by its email without decrypting every row) is
HMAC-SHA256 keyed by HKDF(current key, info="fleetgate lookup v1"): without the key file, the
hash of a guessed address cannot be computed.

Rotation (`rotate`): a new key is put first; `AccountStore.rotate_key` re-encrypts every row
and recomputes every lookup hash with it, then `drop_old` leaves only the new key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import DataKeyError

_KEY_ID_LEN = 4
_NONCE_LEN = 12


@dataclass(frozen=True, slots=True)
class _Key:
    kid: bytes
    secret: bytes


class DataKey:
    """The keys of one key file; `open` loads it (creating it with a fresh key if missing)."""

    def __init__(self, path: Path, keys: list[_Key]) -> None:
        if not keys:
            raise DataKeyError(f"{path}: no key in the data key file")
        self.path = path
        self._keys = keys
        self._by_id = {key.kid: key for key in keys}
        self._lookup_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                                info=b"fleetgate lookup v1").derive(keys[0].secret)

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> DataKey:
        """Load the key file; create it (0600, one fresh key) when missing and `create`."""
        path = Path(path)
        if not path.exists():
            if not create:
                raise DataKeyError(f"{path}: no data key file")
            path.parent.mkdir(parents=True, exist_ok=True)
            _write(path, [_fresh()])
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise DataKeyError(f"{path}: mode {mode:04o} lets others read the data key; "
                               f"chmod 600 it")
        keys = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                kid_hex, secret_b64 = line.split()
                kid, secret = bytes.fromhex(kid_hex), base64.b64decode(secret_b64, validate=True)
            except ValueError:
                raise DataKeyError(f"{path}:{number}: not '<key id> <base64 key>'") from None
            if len(kid) != _KEY_ID_LEN or len(secret) != 32:
                raise DataKeyError(f"{path}:{number}: a key id is 4 bytes, a key 32 bytes")
            keys.append(_Key(kid, secret))
        return cls(path, keys)

    @property
    def current_id(self) -> str:
        return self._keys[0].kid.hex()

    def holds(self, key_id: str) -> bool:
        """Whether the key of this id (hex, as `current_id`) is in the file."""
        try:
            return bytes.fromhex(key_id) in self._by_id
        except ValueError:
            return False

    def encrypt(self, plaintext: bytes, purpose: bytes) -> bytes:
        key = self._keys[0]
        nonce = secrets.token_bytes(_NONCE_LEN)
        return key.kid + nonce + AESGCM(key.secret).encrypt(nonce, plaintext, purpose)

    def decrypt(self, blob: bytes, purpose: bytes) -> bytes:
        key = self._by_id.get(blob[:_KEY_ID_LEN])
        if key is None:
            raise DataKeyError(f"ciphertext under key {blob[:_KEY_ID_LEN].hex()}, "
                               f"which is not in {self.path}")
        nonce = blob[_KEY_ID_LEN:_KEY_ID_LEN + _NONCE_LEN]
        try:
            return AESGCM(key.secret).decrypt(nonce, blob[_KEY_ID_LEN + _NONCE_LEN:], purpose)
        except InvalidTag:
            raise DataKeyError("ciphertext does not open with the data key") from None

    def lookup(self, text: str) -> bytes:
        """The keyed hash of an email address (case-folded, trimmed)."""
        return hmac.new(self._lookup_key, text.strip().casefold().encode(),
                        hashlib.sha256).digest()

    def rotate(self) -> DataKey:
        """Put a fresh key first in the file (old keys still decrypt); return the new DataKey."""
        keys = [_fresh(), *self._keys]
        _write(self.path, keys)
        return DataKey(self.path, keys)

    def drop_old(self) -> DataKey:
        """Keep only the current key (after every row was re-encrypted with it)."""
        _write(self.path, self._keys[:1])
        return DataKey(self.path, self._keys[:1])


def _fresh() -> _Key:
    return _Key(secrets.token_bytes(_KEY_ID_LEN), secrets.token_bytes(32))


def _write(path: Path, keys: list[_Key]) -> None:
    """Write the key file atomically, 0600 from its creation (never readable by others)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        for key in keys:
            out.write(f"{key.kid.hex()} {base64.b64encode(key.secret).decode()}\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
