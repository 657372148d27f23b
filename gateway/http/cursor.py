"""Opaque pagination cursors: URL-safe base64 of a small JSON object.

A cursor names the last item of the previous page (a keyset position, stable under inserts),
never an offset. Clients pass it back unchanged; anything else is a 400 `bad_cursor`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from .errors import ApiError

MAX_CURSOR_CHARS = 512


def encode_cursor(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, kind: str) -> dict[str, Any]:
    """The position a cursor of `kind` names.

    Raises:
        ApiError: 400 bad_cursor, for anything `encode_cursor` did not make for this kind.
    """
    bad = ApiError(400, "bad_cursor", "cursor is not one this endpoint returned")
    if len(text) > MAX_CURSOR_CHARS:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        doc = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(doc, dict) or doc.get("k") != kind:
        raise bad
    return doc
