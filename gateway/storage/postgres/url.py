"""The `--store` URL: `postgresql://USER@HOST:PORT/DB` (libpq's URI form).

Checked before anything connects, so a typo is one clear line, not a libpq error minutes
later: the scheme must be `postgresql://` (or `postgres://`), libpq must parse it, and it
must name a database. Query parameters are libpq's (`?host=/run/postgresql` for a unix
socket, `sslmode=verify-full`, `connect_timeout=5`, ...). A password is better kept out of
the URL (in `~/.pgpass` or `PGPASSWORD`): logs name the store by `redact(url)`.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ..errors import BadStoreURL

SCHEMES = ("postgresql", "postgres")


def check_store_url(url: str) -> str:
    """Return `url` if it is a usable PostgreSQL URL.

    Raises:
        BadStoreURL: wrong scheme, unparsable, or no database named.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise BadStoreURL(f"store URL {redact(url)!r} is not postgresql://USER@HOST:PORT/DB")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        params = conninfo_to_dict(url)
    except (ValueError, psycopg.Error) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unparsable"
        raise BadStoreURL(f"store URL {redact(url)!r} is malformed: {first}") from None
    if not params.get("dbname"):
        raise BadStoreURL(f"store URL {redact(url)!r} names no database "
                          "(postgresql://USER@HOST:PORT/DB)")
    return url


def redact(url: str) -> str:
    """`url` with its password (if any) replaced by ***, for logs and messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
