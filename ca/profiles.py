"""Certificate profiles: root, issuing CA, device, server, operator. Pure builders.

Theory of operation (RFC 5280 section 4.2, the CA/Browser-style hierarchy that
`cryptography.x509.verification` checks):

- root: self-signed, BasicConstraints CA (critical), KeyUsage keyCertSign|cRLSign (critical),
  SKI. 10 years by default.
- issuing CA: signed by the root, BasicConstraints CA pathlen 0 (critical), KeyUsage
  keyCertSign|cRLSign|digitalSignature (critical), SKI, AKI = the root's SKI. 5 years.
- device: subject CN = the network UUID, SAN URI `urn:uuid:<uuid>`, EKU clientAuth only,
  KeyUsage digitalSignature (critical), BasicConstraints CA=false (critical), SKI, AKI.
- server: SAN DNS/IP, EKU serverAuth; otherwise like a device.
- operator: SAN URI `urn:fleetgate:operator:<name>`, EKU clientAuth.
- every leaf names its issuer's CRL (CRL distribution point, one URI) when the home
  publishes its CRLs over HTTP (`Issuer.crl_dp`).

Every builder takes `now` (a UTC-aware datetime); nothing here reads the clock or the disk.
Leaves are back-dated by `BACKDATE` against small clock differences, and never outlive their
issuer (not_after is clamped to the issuer's).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import BadInputError
from .keys import KeyType, PrivateKey, PublicKey, generate_key, signing_hash

BACKDATE = dt.timedelta(minutes=1)
ROOT_DAYS = 3650
ISSUING_DAYS = 1825
LEAF_DAYS = 365
MAX_LEAF_DAYS = 36500
OPERATOR_URN_PREFIX = "urn:fleetgate:operator:"
CLAIM_URN_PREFIX = "urn:fleetgate:claim:"  # a production batch's claim certificate
REGISTRAR_URN_PREFIX = "urn:fleetgate:registrar:"  # a client of the online signer
CLAIM_DAYS = 30  # claims are short-lived: a batch's production run, not a device's life
CLAIM_DAYS_MAX = 365
CA_NAME_MAX = 50  # leaves room for " Issuing CA" inside the 64-character CN limit
_OPERATOR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


class Kind:
    """Certificate kinds recorded in the inventory."""

    ROOT = "root"
    ISSUING = "issuing"
    DEVICE = "device"
    SERVER = "server"
    OPERATOR = "operator"
    CLAIM = "claim"
    REGISTRAR = "registrar"
    ALL = ("root", "issuing", "device", "server", "operator", "claim", "registrar")


@dataclass(frozen=True, slots=True)
class Issuer:
    """A CA certificate with its private key: what signs. Build with `Issuer.of(cert, key)`."""

    cert: x509.Certificate
    key: PrivateKey
    aki: x509.AuthorityKeyIdentifier = field(repr=False)
    # Named in every leaf it signs when the home publishes its CRLs (`crl_url`).
    crl_dp: x509.CRLDistributionPoints | None = field(default=None, repr=False)

    @classmethod
    def of(cls, cert: x509.Certificate, key: PrivateKey, crl_base: str | None = None
           ) -> Issuer:
        """`crl_base`: the URL the home's CRLs are served under (`fleet-ca serve
        --crl-listen`); leaves then name `<crl_base>/crl/<this issuer's key id>.crl`."""
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        dp = None if crl_base is None else x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(crl_url(crl_base, ski.digest))], None, None, None)])
        return cls(cert, key, aki, dp)


def crl_url(base: str, key_id: bytes) -> str:
    """Where the CRL of the issuing CA with SKI `key_id` is served (one DER CRL, RFC 5280
    section 4.2.1.13)."""
    return f"{base.rstrip('/')}/crl/{key_id.hex()}.crl"


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """A root and an issuing CA (both with keys): a whole CA, as made by `build_hierarchy`."""

    root: Issuer
    issuing: Issuer


def check_utc(now: dt.datetime) -> dt.datetime:
    """Refuse naive datetimes; normalise to UTC without microseconds (X.509 has seconds)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("datetimes must be timezone-aware (UTC)")
    return now.astimezone(dt.UTC).replace(microsecond=0)


def check_days(days: int) -> int:
    """A validity in days: an int in 1..MAX_LEAF_DAYS. Raises BadInputError otherwise."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_LEAF_DAYS:
        raise BadInputError(f"days must be a whole number from 1 to {MAX_LEAF_DAYS}, not {days!r}")
    return days


def check_ca_name(name: str) -> str:
    """A CA display name: printable, no outer spaces, 1..50 bytes of UTF-8 (cryptography
    counts the 64-unit CN limit in UTF-8 bytes, and " Issuing CA" must fit too)."""
    if not isinstance(name, str) or not 1 <= len(name.encode("utf-8", "replace")) <= CA_NAME_MAX:
        raise BadInputError(
            f"CA name must be 1 to {CA_NAME_MAX} bytes of UTF-8 ({CA_NAME_MAX} ASCII characters)"
        )
    if name != name.strip() or not name.isprintable():
        raise BadInputError("CA name must be printable with no leading or trailing space")
    return name


def check_operator_name(name: str) -> str:
    """An operator name: letters, digits, '.', '_', '-' (1..64, starting alphanumeric)."""
    if not isinstance(name, str) or not _OPERATOR_NAME.fullmatch(name):
        raise BadInputError(
            f"operator name {name!r} must be 1-64 of A-Z a-z 0-9 . _ - (starting alphanumeric)"
        )
    return name


def check_dns_name(name: str) -> str:
    """An ASCII DNS name, optionally with one leading '*.' wildcard label."""
    host = name[2:] if name.startswith("*.") else name
    labels = host.rstrip(".").split(".")
    if not host or len(host) > 253 or not all(_DNS_LABEL.fullmatch(lbl) for lbl in labels):
        raise BadInputError(f"not a DNS name: {name!r}")
    return name.rstrip(".").lower()


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise BadInputError(f"not an IP address: {text!r}") from None


def _validity(
    now: dt.datetime, days: int, issuer: Issuer | None
) -> tuple[dt.datetime, dt.datetime]:
    now = check_utc(now)
    not_before = now - BACKDATE
    not_after = now + dt.timedelta(days=check_days(days))
    if issuer is not None:
        not_after = min(not_after, issuer.cert.not_valid_after_utc)
    return not_before, not_after


def _leaf_builder(
    public_key: PublicKey,
    subject: x509.Name,
    issuer: Issuer,
    not_before: dt.datetime,
    not_after: dt.datetime,
    serial: int | None,
) -> x509.CertificateBuilder:
    return _with_dp((
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject)
        .public_key(public_key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(check_utc(not_before))
        .not_valid_after(check_utc(not_after))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_KU_SIGN, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(issuer.aki, critical=False)
    ), issuer)


def _with_dp(builder: x509.CertificateBuilder, issuer: Issuer) -> x509.CertificateBuilder:
    """`builder` naming the issuer's CRL distribution point, when it has one."""
    return builder if issuer.crl_dp is None else builder.add_extension(issuer.crl_dp, False)


def _key_usage(*granted: str) -> x509.KeyUsage:
    """A KeyUsage extension with only the named bits set (the others are always False)."""
    bits = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
            "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{bit: bit in granted for bit in bits})


_KU_SIGN = _key_usage("digital_signature")
_KU_CA = _key_usage("digital_signature", "key_cert_sign", "crl_sign")
_KU_ROOT = _key_usage("key_cert_sign", "crl_sign")
_EKU_CLIENT = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
_EKU_SERVER = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])


def _sign(builder: x509.CertificateBuilder, issuer_key: PrivateKey) -> x509.Certificate:
    return builder.sign(issuer_key, signing_hash(issuer_key))


def _ca_subject(name: str, role: str) -> x509.Name:
    """O=<name>, CN="<name> <role>", after checking the name (see `check_ca_name`)."""
    name = check_ca_name(name)
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{name} {role}"),
        ]
    )


def build_root(
    key: PrivateKey, *, name: str, now: dt.datetime, days: int = ROOT_DAYS
) -> x509.Certificate:
    """A self-signed root CA certificate for `key`, CN "<name> Root CA"."""
    subject = _ca_subject(name, "Root CA")
    not_before, not_after = _validity(now, days, None)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_KU_ROOT, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return _sign(builder, key)


def build_issuing(
    public_key: PublicKey,
    *,
    root: Issuer,
    name: str,
    now: dt.datetime,
    days: int = ISSUING_DAYS,
    generation: int = 1,
) -> x509.Certificate:
    """An issuing (intermediate) CA certificate, path length 0, signed by `root`.

    `generation` > 1 (a rotated issuing CA) is part of its CN, so that each issuing CA, and
    the CRL it signs, has a name of its own (CRLs are matched to certificates by issuer name).
    """
    subject = _ca_subject(name, "Issuing CA" if generation == 1 else f"Issuing CA {generation}")
    not_before, not_after = _validity(now, days, root)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(root.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_KU_CA, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(root.aki, critical=False)
    )
    return _sign(builder, root.key)


def build_hierarchy(
    *, name: str, now: dt.datetime, key_type: KeyType | str = KeyType.EC_P256
) -> Hierarchy:
    """A fresh root + issuing CA, keys included. Also how tests make an independent CA."""
    root_key = generate_key(key_type)
    root = Issuer.of(build_root(root_key, name=name, now=now), root_key)
    issuing_key = generate_key(key_type)
    issuing_cert = build_issuing(issuing_key.public_key(), root=root, name=name, now=now)
    return Hierarchy(root=root, issuing=Issuer.of(issuing_cert, issuing_key))


def device_subject(network: uuid.UUID) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(network))])


def device_template(
    issuer: Issuer, not_before: dt.datetime, not_after: dt.datetime
) -> x509.CertificateBuilder:
    """What every device certificate of one batch shares: issuer, validity and the fixed
    extensions. Builders are immutable, so one template serves a whole batch (this is most
    of what makes bulk issuance fast)."""
    return _with_dp((
        x509.CertificateBuilder()
        .issuer_name(issuer.cert.subject)
        .not_valid_before(check_utc(not_before))
        .not_valid_after(check_utc(not_after))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_KU_SIGN, critical=True)
        .add_extension(_EKU_CLIENT, critical=False)
        .add_extension(issuer.aki, critical=False)
    ), issuer)


# The owner-code extension: SHA-256 of the network's one-time owner code (device.json), so the
# gateway can recognise the code an owner types without the CA sharing anything else with it.
# Non-critical: a verifier that does not know it ignores it. OID under 2.25 (a UUID, X.667).
OWNER_CODE_OID = x509.ObjectIdentifier("2.25.246175237376411376389219591651356474711")


def owner_code_extension(digest: bytes) -> x509.UnrecognizedExtension:
    """The extension carrying `digest` (32 bytes) as a DER OCTET STRING."""
    if len(digest) != 32:
        raise ValueError("an owner-code digest is SHA-256 (32 bytes)")
    return x509.UnrecognizedExtension(OWNER_CODE_OID, b"\x04\x20" + digest)


def finish_device(
    template: x509.CertificateBuilder,
    issuer_key: PrivateKey,
    public_key: PublicKey,
    network: uuid.UUID,
    serial: int | None = None,
    owner_hash: bytes | None = None,
) -> x509.Certificate:
    """Sign a device certificate for `network` from a `device_template` (with the owner-code
    extension when `owner_hash` is given)."""
    builder = (
        template.subject_name(device_subject(network))
        .public_key(public_key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(network.urn)]),
            critical=False,
        )
    )
    if owner_hash is not None:
        builder = builder.add_extension(owner_code_extension(owner_hash), critical=False)
    return _sign(builder, issuer_key)


def device_validity(
    issuer: Issuer, now: dt.datetime, days: int = LEAF_DAYS
) -> tuple[dt.datetime, dt.datetime]:
    """(not_before, not_after) of a device certificate issued at `now` for `days`."""
    return _validity(now, days, issuer)


def build_device(
    public_key: PublicKey,
    *,
    issuer: Issuer,
    network: uuid.UUID,
    now: dt.datetime,
    days: int = LEAF_DAYS,
    serial: int | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> x509.Certificate:
    """A device certificate naming `network`.

    `not_before`/`not_after`, when given, override the validity exactly (no clamping): that is
    how tests make expired or not-yet-valid certificates.
    """
    nb, na = _validity(now, days, issuer)
    template = device_template(issuer, not_before or nb, not_after or na)
    return finish_device(template, issuer.key, public_key, network, serial)


def build_server(
    public_key: PublicKey,
    *,
    issuer: Issuer,
    dns: Sequence[str] = (),
    ips: Iterable[str] = (),
    now: dt.datetime,
    days: int = LEAF_DAYS,
) -> x509.Certificate:
    """A TLS server certificate for `dns` names and `ips` (at least one of them)."""
    dns_names = [check_dns_name(d) for d in dns]
    ip_addrs = [parse_ip(i) if isinstance(i, str) else i for i in ips]
    if not dns_names and not ip_addrs:
        raise BadInputError("a server certificate needs at least one --dns or --ip")
    cn = dns_names[0] if dns_names else str(ip_addrs[0])
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ip) for ip in ip_addrs]
    nb, na = _validity(now, days, issuer)
    builder = (
        _leaf_builder(
            public_key,
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn[:64])]),
            issuer,
            nb,
            na,
            None,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(_EKU_SERVER, critical=False)
    )
    return _sign(builder, issuer.key)


def operator_urn(name: str) -> str:
    return OPERATOR_URN_PREFIX + check_operator_name(name)


def build_operator(
    public_key: PublicKey,
    *,
    issuer: Issuer,
    name: str,
    now: dt.datetime,
    days: int = LEAF_DAYS,
) -> x509.Certificate:
    """An operator (HTTP API client) certificate, SAN URI `urn:fleetgate:operator:<name>`."""
    return _named_client(public_key, issuer, name, operator_urn(name), now, days)


def build_claim(
    public_key: PublicKey, *, issuer: Issuer, batch: str, now: dt.datetime,
    days: int = CLAIM_DAYS,
) -> x509.Certificate:
    """A claim certificate for a production batch: SAN URI `urn:fleetgate:claim:<batch>`,
    clientAuth, at most CLAIM_DAYS_MAX days. It opens no device jail (no `urn:uuid:`); the
    online signer exchanges it, a limited number of times, for a device identity."""
    if check_days(days) > CLAIM_DAYS_MAX:
        raise BadInputError(f"a claim lives at most {CLAIM_DAYS_MAX} days, not {days}")
    batch = check_operator_name(batch)
    return _named_client(public_key, issuer, f"claim {batch}", CLAIM_URN_PREFIX + batch, now,
                         days)


def build_registrar(
    public_key: PublicKey, *, issuer: Issuer, name: str, now: dt.datetime,
    days: int = LEAF_DAYS,
) -> x509.Certificate:
    """A registrar (client of the online signer) certificate: SAN URI
    `urn:fleetgate:registrar:<name>`, clientAuth."""
    name = check_operator_name(name)
    return _named_client(public_key, issuer, f"registrar {name}", REGISTRAR_URN_PREFIX + name,
                         now, days)


def _named_client(public_key: PublicKey, issuer: Issuer, cn: str, urn: str,
                  now: dt.datetime, days: int) -> x509.Certificate:
    nb, na = _validity(now, days, issuer)
    builder = (
        _leaf_builder(public_key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]),
                      issuer, nb, na, None)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(urn)]),
                       critical=False)
        .add_extension(_EKU_CLIENT, critical=False)
    )
    return _sign(builder, issuer.key)


def named_urn(cert: x509.Certificate, prefix: str) -> str | None:
    """The name after `prefix` in the certificate's SAN URIs (e.g. a claim's batch), or None."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(prefix):
            return uri[len(prefix):]
    return None


def build_self_signed_device(
    key: PrivateKey, *, network: uuid.UUID, now: dt.datetime, days: int = LEAF_DAYS
) -> x509.Certificate:
    """A certificate that looks like a device's but is signed by its own key (for attack
    tests: it must never be accepted)."""
    nb, na = _validity(now, days, None)
    subject = device_subject(network)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(nb)
        .not_valid_after(na)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_KU_SIGN, critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(network.urn)]),
                       critical=False)
        .add_extension(_EKU_CLIENT, critical=False)
    )
    return _sign(builder, key)


def network_of(cert: x509.Certificate) -> uuid.UUID | None:
    """The network UUID a device certificate names (its SAN `urn:uuid:`), or None."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.lower().startswith("urn:uuid:"):
            try:
                return uuid.UUID(uri[9:])
            except ValueError:
                return None
    return None
