"""Structured logs: one JSON object per line.

Every line has `time` (RFC 3339, UTC), `level` and `event`; connection events add `network`,
`client_id`, `serial` (hex) and `reason` when known, and `peer` (the remote address, truncated
to its /24 or /48 network when `truncate_ip` is on, because addresses are personal data).
The writer flushes each line so a crash loses no log and tests can read lines as they come.

Each event has a level (`EVENT_LEVELS`; info unless listed): lines below `log_level` are not
written, though in-process listeners (tests, metrics) still see them.

A log file is capped and aged: past `log_max_bytes`, and at the first line (or hourly
`maintain` call) of each UTC day, it is rotated by the standard library's
`RotatingFileHandler` (`log_backups` old files kept); rotated files older than
`log_retention_days` are deleted, so the peer addresses they hold are gone with them. SIGHUP
still reopens the file for an external rotation tool.

Each device connection logs through a `ConnectionLog`, a token bucket of
`log_lines_per_connection` lines per second (burst `log_lines_burst`): lines past it are
counted, not written, and one `log_suppressed` line (count, and per event name) follows once
the budget refills or the connection ends. The lines that tell a connection's story
(`connected`, `disconnected`, `refused`, `revoked`, `internal_error`: at most a few per
connection) bypass the budget, so they are never lost.

Before a device is known, a connection's refusal (an accept over a rate, a failed TLS
handshake) is one line per connection, and connections cost an attacker nothing: those lines
go through a `SourceLog` instead, the same budget per source address, so a flood of refused
connections from one source writes a few lines a second and one summary, not a line each.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import logging.handlers
import os
import sys
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from .limits import SourceRates, TokenBucket

if TYPE_CHECKING:
    from .metrics import MqttMetrics

LOG_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
"""The levels `log_level` may name, lowest first."""

EVENT_LEVELS = {
    **dict.fromkeys(("subscribed",), "debug"),
    **dict.fromkeys((
        "refused", "publish_denied", "subscribe_denied", "readings_throttled",
        "log_suppressed", "crl_expiring", "crl_ignored", "crl_signer_ignored", "crl_rejected",
        "tls_reload_failed", "log_reopen_failed", "http_off",
        "history_retention_failed"), "warning"),
    **dict.fromkeys((
        "internal_error", "http_internal_error", "ingest_failed", "accept_error",
        "crl_expired", "status_failed"), "error"),
    # The cluster (gateway/cluster/): a join, a leave, a reap done, a link back are info.
    **dict.fromkeys((
        "node_dead", "node_reaping", "heartbeat_failed", "cluster_bus_down",
        "cluster_bus_lost", "cluster_send_failed", "cluster_write_failed",
        "cluster_bad_note", "worker_exited"), "warning"),
    **dict.fromkeys((
        "node_fenced", "reap_failed", "cluster_task_failed", "cluster_handler_failed",
        "cluster_retained_reload_failed"), "error"),
}
"""Events whose level is not info: per-connection chatter is debug, refusals and degraded
states are warnings, what needs an operator (or is a bug) is an error. In a cluster: a node
found dead, a lost heartbeat or bus link (the node keeps serving and reconnects), a worker
that exited (restarted) are warnings; a node fenced (it stops), a reap that failed (wills
unsent until a later scan), a background step's or a handler's bug are errors."""


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


DAY = 86_400.0


class RotatingLogFile(logging.handlers.RotatingFileHandler):
    """The standard library's size-based rotation, plus one rotation per UTC day and the
    deletion of rotated files older than `retention_days` (0: none deleted). Files are
    created 0640; errors are swallowed. `clock` gives the UTC time (tests pass their own).

    A rotated file's mtime is its newest line's time on `clock`, and a file found at start
    is dated by its last write (a gateway restarted after days away rotates it at once), so
    the retention counts from the lines' own times. With no backups kept, a rotation drops
    the lines (the file is opened O_APPEND: renaming is the only way it shrinks)."""

    def __init__(self, path: str, *, max_bytes: int, backups: int, retention_days: int = 0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self.retention = retention_days * DAY
        self.clock = clock
        found = os.fstat(self.stream.fileno())
        self.last_line = found.st_mtime if found.st_size else clock().timestamp()
        self.day = datetime.fromtimestamp(self.last_line, UTC).date()

    def shouldRollover(self, record: logging.LogRecord) -> bool:  # noqa: N802 - stdlib's
        return self.clock().date() != self.day or bool(super().shouldRollover(record))

    def doRollover(self) -> None:  # noqa: N802 - stdlib's name
        if self.backupCount > 0:
            super().doRollover()
            with contextlib.suppress(OSError):  # dated by its newest line, on our clock
                os.utime(f"{self.baseFilename}.1", (self.last_line, self.last_line))
        else:  # no old file kept: the lines go
            if self.stream is not None:
                self.stream.close()
            with contextlib.suppress(OSError):
                os.unlink(self.baseFilename)
            self.stream = self._open()
        self.day = self.clock().date()
        self.prune()

    def maintain(self) -> None:
        """Rotate if a UTC day has begun since the last rotation, and prune: what a quiet
        gateway needs, whose file no new line would rotate (called hourly)."""
        with self.lock:  # type: ignore[union-attr]
            if self.clock().date() == self.day:
                self.prune()
            elif self.stream is None or self.stream.tell() == 0:
                self.day = self.clock().date()  # nothing written that day: nothing to rotate
                self.prune()
            else:
                self.doRollover()

    def prune(self) -> None:
        """Delete the rotated files whose last line is older than the retention."""
        if not self.retention:
            return
        oldest = self.clock().timestamp() - self.retention
        folder, base = os.path.split(self.baseFilename)
        try:
            entries = list(os.scandir(folder or "."))
        except OSError:
            return
        for entry in entries:  # every `base.N`: also those a larger log_backups left
            number = entry.name.removeprefix(base + ".")
            if number == entry.name or not number.isdigit():
                continue
            try:
                if entry.stat().st_mtime < oldest:
                    os.unlink(entry.path)
            except OSError:
                pass  # already gone

    def _open(self) -> TextIO:  # type: ignore[override]
        return open_log_file(self.baseFilename)

    def reopen(self) -> None:
        """Close and open the file again (SIGHUP: an external tool renamed it).

        Raises:
            OSError: it cannot be opened; the old stream is kept.
        """
        stream = self._open()
        with self.lock:  # type: ignore[union-attr]
            old, self.stream = self.stream, stream
        try:
            old.close()
        except OSError:
            pass

    def handleError(self, record: logging.LogRecord) -> None:
        pass  # a full or broken log file must never take the gateway down

    def write_line(self, line: str) -> None:
        self.handle(logging.makeLogRecord({"msg": line}))
        self.last_line = self.clock().timestamp()


class EventLog:
    """Writes JSON log lines to a text stream; optional in-process listeners see each record.

    With `path`, `reopen()` (called on SIGHUP) closes the file and opens `path` again, so a
    rotation tool can rename the file and signal the gateway. With `rotating`, lines go to
    that size-capped file instead of `stream`.
    """

    def __init__(
        self, stream: TextIO | None = None, *, truncate_ips: bool = True,
        path: str | None = None, rotating: RotatingLogFile | None = None, level: str = "info",
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._truncate = truncate_ips
        self._level = LOG_LEVELS[level]
        self._path = path
        self._rotating = rotating
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    def reopen(self) -> None:
        """Reopen the log file after a rotation; keep the old stream if that fails."""
        if self._rotating is not None:
            try:
                self._rotating.reopen()
            except OSError as exc:
                self.emit("log_reopen_failed",
                          detail=f"{self._rotating.baseFilename}: {exc.strerror or exc}")
                return
            self.emit("log_reopened")
            return
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

    def maintain(self) -> None:
        """Rotate the log file by date and delete what is past its retention (hourly)."""
        if self._rotating is not None:
            self._rotating.maintain()

    def add_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call `listener(record)` for every record (tests, metrics)."""
        self._listeners.append(listener)

    def peer(self, address: str) -> str:
        return truncate_ip(address) if self._truncate else address

    def writes(self, event: str) -> bool:
        """Whether a line of `event` is written at this log's level."""
        return LOG_LEVELS[EVENT_LEVELS.get(event, "info")] >= self._level

    def emit(self, event: str, **fields: Any) -> dict[str, Any] | None:
        """Write one line (if its level is written); fields whose value is None are left out.
        Returns the record; None when it is below the level and no listener wants it (then
        it costs two dict lookups, nothing is built)."""
        level = EVENT_LEVELS.get(event, "info")
        if LOG_LEVELS[level] < self._level and not self._listeners:
            return None
        record: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": level,
            "event": event,
        }
        for key, value in fields.items():
            if value is None:
                continue
            if key == "serial" and isinstance(value, int):
                value = format(value, "x")
            record[key] = value
        for listener in self._listeners:
            listener(record)
        if LOG_LEVELS[level] < self._level:
            return record
        line = json.dumps(record, default=str)
        if self._rotating is not None:
            self._rotating.write_line(line)
        else:
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (OSError, ValueError):
                pass  # a closed or full log stream must never take the gateway down
        return record


# The lines that tell a connection's story: a few per connection at most, never suppressed.
ESSENTIAL_EVENTS = frozenset({"connected", "disconnected", "refused", "revoked",
                              "internal_error"})

_CONTEXT = ("network", "client_id", "serial")


class ConnectionLog:
    """One connection's view of the EventLog, within a budget of lines per second.

    `emit` writes a line if the budget allows (essential events always); otherwise it counts
    the line per event name and in `metrics.log_lines_suppressed`. The one summary line
    `log_suppressed` (`suppressed`: total, `events`: per name) is written before the next line
    that fits the budget again, before an essential line, or by `finish()` at the end.
    """

    def __init__(self, log: EventLog, *, rate: float, burst: int, metrics: MqttMetrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = log
        self._bucket = TokenBucket(rate, burst, clock())
        self._clock = clock
        self._metrics = metrics
        self._suppressed: Counter[str] = Counter()
        self._context: dict[str, Any] = {}  # who the summary is about

    def peer(self, address: str) -> str:
        return self._log.peer(address)

    def emit(self, event: str, **fields: Any) -> dict[str, Any] | None:
        """Write one line if the budget allows; return it, or None if it was suppressed.

        A line below the log's level is not written, so it spends no budget (and is never
        counted as suppressed): the listeners still get it."""
        if not self._log.writes(event):
            return self._log.emit(event, **fields)
        if event in ESSENTIAL_EVENTS:
            self.finish()
            return self._log.emit(event, **fields)
        if not self._bucket.try_take(1, self._clock()):
            self._suppressed[event] += 1
            for key in _CONTEXT:
                if fields.get(key) is not None:
                    self._context[key] = fields[key]
            self._metrics.log_lines_suppressed.inc()
            return None
        if self._suppressed:
            self.finish()
        return self._log.emit(event, **fields)

    def finish(self) -> None:
        """Write the summary of what was suppressed since the last one, if anything was."""
        if not self._suppressed:
            return
        events, self._suppressed = dict(self._suppressed), Counter()
        self._metrics.log_summaries.inc()
        self._log.emit("log_suppressed", suppressed=sum(events.values()), events=events,
                       **self._context)


class SourceLog:
    """Lines about connections not yet identified, within a budget per source address
    (`source_key`): `log_lines_per_connection` per second, burst `log_lines_burst`, in a
    bounded LRU of sources (`SourceRates`).

    A line over its source's budget is counted (in `metrics.log_lines_suppressed`, and per
    source); the source's next line within budget is preceded by one `log_suppressed` line
    with that count. Memory stays bounded whatever the number of sources.
    """

    def __init__(self, log: EventLog, *, rate: float, burst: int, metrics: MqttMetrics,
                 clock: Callable[[], float] = time.monotonic, max_sources: int = 4_096
                 ) -> None:
        self._log = log
        self._rates = SourceRates(rate, burst, max_sources)
        self._metrics = metrics
        self._clock = clock
        self._suppressed: OrderedDict[str, int] = OrderedDict()
        self._max_sources = max_sources

    def emit(self, source: str, event: str, **fields: Any) -> dict[str, Any] | None:
        """Write `event` if `source`'s budget allows; return it, or None if suppressed."""
        if not self._log.writes(event):
            return self._log.emit(event, **fields)
        if not self._rates.try_take(source, self._clock()):
            self._suppressed[source] = self._suppressed.pop(source, 0) + 1
            if len(self._suppressed) > self._max_sources:
                self._suppressed.popitem(last=False)
            self._metrics.log_lines_suppressed.inc()
            return None
        count = self._suppressed.pop(source, 0)
        if count:
            self._metrics.log_summaries.inc()
            self._log.emit("log_suppressed", suppressed=count, events={event: count},
                           peer=fields.get("peer"))
        return self._log.emit(event, **fields)
