"""Structured logs: one JSON object per line.

Every line has `time` (RFC 3339, UTC) and `event`; connection events add `network`,
`client_id`, `serial` (hex) and `reason` when known, and `peer` (the remote address, truncated
to its /24 or /48 network when `truncate_ip` is on, because addresses are personal data).
The writer flushes each line so a crash loses no log and tests can read lines as they come.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO


def truncate_ip(address: str) -> str:
    """Return the /24 (IPv4) or /48 (IPv6) network of `address`, or `address` if not an IP."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 4:
        return str(ipaddress.ip_network(f"{ip}/24", strict=False))
    if ip.ipv4_mapped is not None:
        return str(ipaddress.ip_network(f"{ip.ipv4_mapped}/24", strict=False))
    return str(ipaddress.ip_network(f"{ip}/48", strict=False))


def open_log_file(path: str) -> TextIO:
    """Open `path` for appending, created 0640 (logs hold personal data: not world-readable).

    Raises:
        OSError: it cannot be opened.
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    return os.fdopen(fd, "a", encoding="utf-8")


class EventLog:
    """Writes JSON log lines to a text stream; optional in-process listeners see each record.

    With `path`, `reopen()` (called on SIGHUP) closes the file and opens `path` again, so a
    rotation tool can rename the file and signal the gateway.
    """

    def __init__(
        self, stream: TextIO | None = None, *, truncate_ips: bool = True,
        path: str | None = None,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._truncate = truncate_ips
        self._path = path
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    def reopen(self) -> None:
        """Reopen the log file after a rotation; keep the old stream if that fails."""
        if self._path is None:
            return
        try:
            stream = open_log_file(self._path)
        except OSError as exc:
            self.emit("log_reopen_failed", detail=f"{self._path}: {exc.strerror or exc}")
            return
        old, self._stream = self._stream, stream
        try:
            old.close()
        except OSError:
            pass
        self.emit("log_reopened")

    def add_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call `listener(record)` for every record (tests, metrics)."""
        self._listeners.append(listener)

    def peer(self, address: str) -> str:
        return truncate_ip(address) if self._truncate else address

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one line; fields whose value is None are left out."""
        record: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "event": event,
        }
        for key, value in fields.items():
            if value is None:
                continue
            if key == "serial" and isinstance(value, int):
                value = format(value, "x")
            record[key] = value
        try:
            self._stream.write(json.dumps(record, default=str) + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass  # a closed or full log stream must never take the gateway down
        for listener in self._listeners:
            listener(record)
        return record
