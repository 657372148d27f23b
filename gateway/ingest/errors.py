"""The error tree of `gateway.ingest`.

- `IngestError`: root.
- `ReadingRejected`: one reading (or a control command) that cannot be stored; `code` is a
  stable token for the device's `errors` topic and the rejection counters, `reason` a sentence.

Validation never raises anything else on peer input: a test feeds Hypothesis-made payloads.
"""

from __future__ import annotations

from enum import StrEnum

from ..errors import GatewayError


class RejectCode(StrEnum):
    """Why a reading or command was not stored (stable tokens: firmware may match on them)."""

    MALFORMED = "MALFORMED"  # not UTF-8, not JSON of the documented shape, bad timestamp
    TOO_LARGE = "TOO_LARGE"  # payload or batch over the limits
    UNKNOWN_VALUE = "UNKNOWN_VALUE"  # no such device/value declared in this network
    PERMISSION = "PERMISSION"  # a report on a write-only value, a control on a read-only one
    TYPE = "TYPE"  # data of the wrong type (text for a number, ...)
    RANGE = "RANGE"  # number outside [min, max]
    STEP = "STEP"  # number not on the declared step grid
    SIZE = "SIZE"  # string longer than max, blob larger than max
    XML = "XML"  # not well-formed XML, or XML with a DTD
    UNKNOWN_TOPIC = "UNKNOWN_TOPIC"  # report/... of a shape we do not know
    QUOTA = "QUOTA"  # the network's stored data reached max_stored_bytes_per_network


class IngestError(GatewayError):
    """Root of every error raised by `gateway.ingest`."""


class ReadingRejected(IngestError):
    """One reading or command was refused for `code`; `reason` says why in words."""

    def __init__(self, code: RejectCode, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
