"""Size limits of the device protocol, with defaults (config-style: override per deployment).

Every limit is checked before the work it bounds: a declaration of a million values is refused
by its byte size before it is parsed, and by its counts before any store access.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one network may declare and report."""

    max_model_bytes: int = 256 * 1024  # the gateway's default max packet size
    max_devices_per_network: int = 256
    max_values_per_device: int = 256
    max_values_per_network: int = 4096
    max_name_length: int = 64
    max_description_length: int = 1024
    max_unit_length: int = 32
    max_reasons: int = 50  # a rejected declaration lists at most this many reasons
    max_report_bytes: int = 256 * 1024
    max_batch_readings: int = 1000
    max_string_length: int = 64 * 1024  # the largest `max` a string value may declare
    max_blob_bytes: int = 256 * 1024  # the largest `max` a blob value may declare
    max_xml_bytes: int = 256 * 1024  # the largest `max` an xml value may declare
    max_errors_per_reply: int = 20  # an `errors` reply lists at most this many rejections
    # Bytes a network's stored readings and commands may take (0: no limit); past it its
    # reports are refused (code QUOTA) until an operator erases data.
    max_stored_bytes_per_network: int = 1024 * 1024 * 1024


DEFAULT_LIMITS = Limits()
