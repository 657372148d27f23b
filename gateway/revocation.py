"""Revocation and certificate rotation without restart.

`watch_tls_files` polls the stat() of crl.pem, root.crt and the server certificate/key every
`crl_poll_interval` seconds (0.2 s by default; a stat is cheap and needs no inotify) and
reloads on SIGHUP too (which also reopens the log file, for rotation). On a change it
rebuilds the TLS context (new handshakes take it; live sessions are untouched) and closes
every live session whose certificate serial the new CRL lists, with reason REVOKED. An
unusable new file keeps the old context in force and is logged once per change, so a
half-written CRL never locks devices out.
"""

from __future__ import annotations

import signal
import threading
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import trio

from .errors import ConfigError

if TYPE_CHECKING:
    from .app import Gateway


def reload_tls(gateway: Gateway, trigger: str, *, force: bool = False) -> bool:
    """Reload the TLS files if they changed (or `force`); close revoked sessions.

    Returns whether a new state is in force.
    """
    if not force and not gateway.tls.changed():
        return False
    try:
        state = gateway.tls.reload()
    except ConfigError as exc:
        gateway.log.emit("tls_reload_failed", trigger=trigger, detail=str(exc))
        return False
    gateway.log.emit("tls_reloaded", trigger=trigger, revoked=len(state.revoked))
    gateway.check_crl_freshness()
    gateway.close_revoked()
    return True


async def watch_tls_files(gateway: Gateway, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Run until cancelled: poll the TLS files, and reload on SIGHUP (main thread only)."""
    interval = gateway.config.crl_poll_interval
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        if threading.current_thread() is threading.main_thread():
            # Installed before started(): a SIGHUP right after start is already ours.
            signals = stack.enter_context(trio.open_signal_receiver(signal.SIGHUP))
            nursery.start_soon(_on_sighup, gateway, signals)
        task_status.started()
        failed_stamps = None
        while True:
            await trio.sleep(interval)
            if gateway.tls.changed():
                stamps = gateway.tls.stamps_now()
                if stamps == failed_stamps:
                    continue  # this exact file set failed already; wait for the next write
                if not reload_tls(gateway, "file_changed"):
                    failed_stamps = stamps
                else:
                    failed_stamps = None


async def _on_sighup(gateway: Gateway, signals) -> None:
    async for _ in signals:
        gateway.log.reopen()  # log rotation: the file was renamed, start a new one
        reload_tls(gateway, "SIGHUP", force=True)
