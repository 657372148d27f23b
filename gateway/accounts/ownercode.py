"""The owner-code hash a device certificate carries (ca.profiles.OWNER_CODE_OID).

The gateway reads it when a network's device connects (`owner_hash_of`) and records it in
the accounts file once; the gateway never sees the code itself until an owner types it.
"""

from __future__ import annotations

from cryptography import x509

# Kept equal to ca.profiles.OWNER_CODE_OID (a test checks): the gateway does not import ca.
OWNER_CODE_OID = x509.ObjectIdentifier("2.25.246175237376411376389219591651356474711")


def owner_hash_of(cert: x509.Certificate) -> bytes | None:
    """The 32-byte owner-code hash in `cert`, or None (no extension, or malformed)."""
    try:
        ext = cert.extensions.get_extension_for_oid(OWNER_CODE_OID).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    raw = getattr(ext, "value", b"")
    if len(raw) != 34 or raw[:2] != b"\x04\x20":
        return None
    return raw[2:]
