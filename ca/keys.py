"""Key pairs: generation, signing hash, PEM in and out. Pure: no disk.

Devices get ECDSA P-256 (what device TLS stacks such as mbedTLS/esp-tls support everywhere);
CA keys may also be Ed25519 or RSA-3072. Private keys are serialised as PKCS#8 PEM, encrypted
with `BestAvailableEncryption` when a passphrase is given.
"""

from __future__ import annotations

from enum import StrEnum

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)

from .errors import BadInputError, PassphraseError

PrivateKey = CertificateIssuerPrivateKeyTypes
PublicKey = CertificatePublicKeyTypes


class KeyType(StrEnum):
    """Key algorithms the CA can generate (the values are the CLI spellings)."""

    EC_P256 = "ec-p256"
    ED25519 = "ed25519"
    RSA_3072 = "rsa-3072"


def generate_key(key_type: KeyType | str = KeyType.EC_P256) -> PrivateKey:
    """A fresh private key of `key_type`. Raises BadInputError for an unknown type."""
    try:
        kt = KeyType(key_type)
    except ValueError:
        choices = ", ".join(k.value for k in KeyType)
        raise BadInputError(f"unknown key type {key_type!r} (choose {choices})") from None
    if kt is KeyType.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if kt is KeyType.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def key_type_of(key: PrivateKey | PublicKey) -> str:
    """A short human name for the key's algorithm, e.g. 'ec-p256', 'rsa-2048', 'ed25519'."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return {"secp256r1": "ec-p256", "secp384r1": "ec-p384", "secp521r1": "ec-p521"}.get(
            key.curve.name, f"ec-{key.curve.name}"
        )
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return f"rsa-{key.key_size}"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(key, ed448.Ed448PrivateKey | ed448.Ed448PublicKey):
        return "ed448"
    return type(key).__name__


def signing_hash(key: PrivateKey) -> hashes.HashAlgorithm | None:
    """The hash to sign with for `key`: SHA-256, or None for EdDSA (which hashes itself)."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def private_key_pem(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM of `key`, encrypted with `passphrase` when one is given (non-empty)."""
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def is_encrypted_pem(data: bytes) -> bool:
    """True if `data` is a PEM private key that needs a passphrase."""
    return b"ENCRYPTED" in data[:64]


def load_private_key_pem(data: bytes, passphrase: bytes | None = None) -> PrivateKey:
    """Parse a PEM private key. Raises PassphraseError when the passphrase is missing/wrong."""
    if is_encrypted_pem(data) and not passphrase:
        raise PassphraseError("the CA key is encrypted and no passphrase was given")
    try:
        key = serialization.load_pem_private_key(
            data, password=passphrase if is_encrypted_pem(data) else None
        )
    except (ValueError, TypeError) as exc:
        if is_encrypted_pem(data):
            raise PassphraseError("wrong passphrase for the CA key") from None
        raise BadInputError(f"not a usable private key: {exc}") from None
    return key  # type: ignore[return-value]


def check_acceptable_public_key(key: object) -> None:
    """Refuse public keys the CA will not certify. Raises BadInputError naming the reason.

    Accepted: EC P-256/P-384/P-521, Ed25519, RSA >= 2048 bits.
    """
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
            raise BadInputError(f"EC curve {key.curve.name} is not accepted (use P-256)")
        return
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise BadInputError(f"RSA key of {key.key_size} bits is too small (>= 2048)")
        return
    if isinstance(key, ed25519.Ed25519PublicKey):
        return
    raise BadInputError(f"{type(key).__name__} keys are not accepted (use EC P-256)")
