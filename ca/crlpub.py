"""Publishing the CRLs: where they are served, what a request for one gets, when to renew.

- The home's CRL URL (`<home>/crl-url`, one line, set by `fleet-ca crl --url URL`): when set,
  every leaf the home signs from then on names `<URL>/crl/<issuing key id>.crl` as its CRL
  distribution point (`ca.profiles.Issuer.crl_dp`), and `fleet-ca serve --crl-listen`
  answers there. Certificates issued before keep what they were issued with.
- `answer(path, crls)`: the CRL routes, over plain HTTP (a CRL is signed: it needs no TLS,
  and a verifier must not need a CRL to reach one, RFC 5280 section 4.2.1.13):
  `/crl/<key id>.crl` one issuing CA's CRL in DER (`application/pkix-crl`, RFC 2585),
  `/crl.pem` every served CRL in PEM (what gateways copy as crl.pem).
- `due(crls, now, within)`: whether the CRLs need re-signing now (`fleet-ca crl --if-due`):
  one of them reaches its nextUpdate within `within`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .errors import BadInputError, OutputError
from .files import atomic_write

URL_FILE = "crl-url"
DUE_WITHIN = dt.timedelta(days=10)  # a third of a CRL's 30 days: a missed day is harmless
DER_TYPE, PEM_TYPE = "application/pkix-crl", "application/x-pem-file"


def load_base(home: Path) -> str | None:
    """The home's CRL URL, or None when its CRLs are not published."""
    try:
        text = (home / URL_FILE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def check_base(url: str) -> str:
    """An http(s) URL with a host and no query: the base the CRL paths go under."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query \
            or parts.fragment or not url.isascii() or any(c.isspace() for c in url.strip()):
        raise BadInputError(f"not an http:// or https:// base URL: {url!r}")
    return url.strip().rstrip("/")


def save_base(home: Path, url: str | None) -> None:
    """Set (None: remove) the home's CRL URL. Raises BadInputError, OutputError."""
    try:
        if url is None:
            (home / URL_FILE).unlink(missing_ok=True)
        else:
            atomic_write(home / URL_FILE, (check_base(url) + "\n").encode())
    except OSError as exc:
        raise OutputError(f"cannot write {home / URL_FILE}: {exc.strerror or exc}") from None


def key_id(crl: x509.CertificateRevocationList) -> str | None:
    try:
        aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None
    return aki.key_identifier.hex() if aki.key_identifier else None


def answer(path: str, crls: list[x509.CertificateRevocationList]
           ) -> tuple[int, str, bytes] | None:
    """(status, content type, body) for a CRL route; None when `path` is no CRL route."""
    if path == "/crl.pem":
        return 200, PEM_TYPE, b"".join(c.public_bytes(Encoding.PEM) for c in crls)
    if not (path.startswith("/crl/") and path.endswith(".crl")):
        return None
    wanted = path[len("/crl/"):-len(".crl")].lower()
    for crl in crls:
        if key_id(crl) == wanted:
            return 200, DER_TYPE, crl.public_bytes(Encoding.DER)
    return 404, "text/plain; charset=utf-8", b"no CRL of that issuing CA here\n"


def next_update(crls: list[x509.CertificateRevocationList]) -> dt.datetime | None:
    """The earliest nextUpdate of `crls` (None: none has one)."""
    times = [c.next_update_utc for c in crls if c.next_update_utc is not None]
    return min(times) if times else None


def due(crls: list[x509.CertificateRevocationList], now: dt.datetime,
        within: dt.timedelta = DUE_WITHIN) -> bool:
    """Whether to re-sign: no CRL, or one reaches its nextUpdate within `within` of `now`."""
    first = next_update(crls)
    return first is None or first - now <= within
