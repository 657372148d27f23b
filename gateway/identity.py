"""Who a TLS peer is, read from the certificate the handshake has already verified.

The TLS layer (`tls.py`) proves the chain, validity period and revocation status. This module
decides whether the verified certificate opens a jail: only a device certificate does, i.e.
EKU clientAuth, not a CA, and exactly one SAN URI `urn:uuid:<uuid>` naming its network.
Operator certificates (`urn:fleetgate:operator:<name>`) and server certificates are refused
with a reason. Nothing the client says later (client id, username, topics) can change the
identity returned here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from .accounts.ownercode import owner_hash_of
from .errors import AdmissionRefused
from .reasons import RefusalCause

IDENTITY_CACHE = 1_024  # device certificates whose identity is kept parsed (~1 KiB each)
OPERATOR_URI_PREFIX = "urn:fleetgate:operator:"
DEVICE_URI_PREFIX = "urn:uuid:"


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """The identity a device certificate proves: its network, and which certificate."""

    network_uuid: uuid.UUID
    serial: int
    not_after: datetime
    owner_hash: bytes | None = None  # SHA-256 of the bundle's owner code (gateway.accounts)

    @property
    def network(self) -> str:
        """The network UUID as the canonical lower-case string used in topics and logs."""
        return str(self.network_uuid)

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "x")


def identity_from_der(der: bytes | None) -> DeviceIdentity:
    """Read a device identity from a DER certificate the TLS layer has verified.

    Raises:
        AdmissionRefused: reason NO_CERTIFICATE, BAD_CERTIFICATE, OPERATOR_CERTIFICATE,
            SERVER_CERTIFICATE, CA_CERTIFICATE or NOT_A_DEVICE.
    """
    if not der:
        raise AdmissionRefused(RefusalCause.NO_CERTIFICATE, "the peer presented no certificate")
    return _parsed_identity(der)


@lru_cache(maxsize=IDENTITY_CACHE)
def _parsed_identity(der: bytes) -> DeviceIdentity:
    """The identity of a DER certificate, parsed once per certificate while it reconnects
    (a refusal raises and is never cached). The identity is a pure function of the bytes:
    revocation, expiry and bars are checked on every connection by the caller."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise AdmissionRefused(RefusalCause.BAD_CERTIFICATE,
                               f"unparseable certificate: {exc}") from None
    return identity_from_certificate(cert)


def identity_from_certificate(cert: x509.Certificate) -> DeviceIdentity:
    """Same as `identity_from_der`, for an already parsed certificate."""
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if basic.ca:
            raise AdmissionRefused(RefusalCause.CA_CERTIFICATE, "a CA certificate is not a device")
    except x509.ExtensionNotFound:
        pass
    except ValueError as exc:
        raise AdmissionRefused(RefusalCause.BAD_CERTIFICATE, f"bad extensions: {exc}") from None
    uris = _san_uris(cert)
    if any(u.startswith(OPERATOR_URI_PREFIX) for u in uris):
        raise AdmissionRefused(RefusalCause.OPERATOR_CERTIFICATE,
                               "operator certificates open no jail")
    ekus = _ekus(cert)
    if ExtendedKeyUsageOID.CLIENT_AUTH not in ekus:
        if ExtendedKeyUsageOID.SERVER_AUTH in ekus:
            raise AdmissionRefused(RefusalCause.SERVER_CERTIFICATE,
                                   "server certificates open no jail")
        raise AdmissionRefused(RefusalCause.NOT_A_DEVICE, "certificate lacks EKU clientAuth")
    networks = [u for u in uris if u.lower().startswith(DEVICE_URI_PREFIX)]
    if len(networks) != 1:
        raise AdmissionRefused(
            RefusalCause.NOT_A_DEVICE,
            f"expected one SAN URI urn:uuid:<uuid>, found {len(networks)}"
        )
    text = networks[0][len(DEVICE_URI_PREFIX):]
    try:
        network = uuid.UUID(text)
    except ValueError:
        raise AdmissionRefused(RefusalCause.NOT_A_DEVICE,
                               f"SAN URI names no UUID: {text!r}") from None
    if str(network) != text.lower():
        # Accept only the canonical spelling, so one network has one topic prefix.
        raise AdmissionRefused(RefusalCause.NOT_A_DEVICE, f"SAN URI UUID not canonical: {text!r}")
    return DeviceIdentity(network, cert.serial_number, cert.not_valid_after_utc,
                          owner_hash_of(cert))


def _san_uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    except ValueError as exc:
        raise AdmissionRefused(RefusalCause.BAD_CERTIFICATE, f"bad SAN: {exc}") from None
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


def _ekus(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return []
    except ValueError as exc:
        raise AdmissionRefused(RefusalCause.BAD_CERTIFICATE, f"bad EKU: {exc}") from None
