"""Revocation and certificate rotation without restart.

`watch_tls_files` polls the stat() of crl.pem, the trust files (root.crt, issuing.crt,
ca-chain.pem) and the server certificate/key every `crl_poll_interval` seconds (0.2 s by
default; a stat is cheap and needs no inotify) and reloads on SIGHUP too (which also reopens
the log file, for rotation). Two things reload, independently (`TLSContexts`):

- The revoked set, when crl.pem or a trust file changed: only CRLs whose signature verifies
  against a trusted CA count (`gateway.revoked`); each other one is logged once per change
  (`crl_ignored`). The new set is in force at once, whatever state the other TLS files are
  in: every live session whose serial it lists is closed with reason REVOKED, and every new
  connection is checked against it after its handshake. A file with no valid CRL keeps the
  previous set in force (`crl_rejected`), so a half-written CRL never locks devices out nor
  lets a revoked one in.
- The TLS context (new handshakes take it; live sessions are untouched), when its files or the
  revoked set changed. Unusable files keep the old context in force, logged once per change
  (`tls_reload_failed`).
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
    from .tls import CRLLoad


def reload_tls(gateway: Gateway, trigger: str, *, force: bool = False) -> bool:
    """Reload what changed (everything with `force`): the revoked set, then the context.

    Returns whether a new revoked set or context is in force.
    """
    tls = gateway.tls
    changed = False
    if force or tls.revocation_changed():
        load = tls.reload_revoked()
        log_crl_load(gateway, load, trigger)
        if load.applied:
            changed = True
            gateway.check_crl_freshness()
            gateway.close_revoked()
            cluster = getattr(gateway, "peers", None)
            if cluster is not None and trigger != "cluster":
                cluster.crl_reloaded()  # the other nodes reload theirs now
    if force or tls.context_changed():
        try:
            state = tls.rebuild()
        except ConfigError as exc:
            gateway.log.emit("tls_reload_failed", trigger=trigger, detail=str(exc),
                             revoked=len(tls.revoked))
        else:
            changed = True
            gateway.log.emit("tls_reloaded", trigger=trigger, revoked=len(state.revoked))
    return changed


def log_crl_load(gateway: Gateway, load: CRLLoad, trigger: str) -> None:
    """One line per ignored trust certificate and CRL, then what is in force."""
    log = gateway.log
    for cert in load.trust_ignored:
        log.emit("crl_signer_ignored", file=cert.source, position=cert.position or None,
                 detail=cert.reason)
    for crl in load.ignored:
        gateway.metrics.mqtt.crls_ignored.inc()
        log.emit("crl_ignored", trigger=trigger, position=crl.position, issuer=crl.issuer,
                 detail=crl.reason)
    revoked = load.revoked
    next_update = revoked.next_update.isoformat() if revoked.next_update else None
    if load.applied:
        log.emit("crl_loaded", trigger=trigger, crls=revoked.crls, revoked=len(revoked),
                 next_update=next_update)
    else:
        gateway.metrics.mqtt.crls_rejected.inc()
        log.emit("crl_rejected", trigger=trigger, detail=load.problem,
                 kept="the previous revoked set stays in force", revoked=len(revoked))


async def watch_tls_files(gateway: Gateway, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Run until cancelled: poll the TLS files, and reload on SIGHUP (main thread only)."""
    interval = gateway.config.crl_poll_interval
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        if threading.current_thread() is threading.main_thread():
            # Installed before started(): a SIGHUP right after start is already ours.
            signals = stack.enter_context(trio.open_signal_receiver(signal.SIGHUP))
            nursery.start_soon(_on_sighup, gateway, signals)
        log_crl_load(gateway, gateway.tls.last_load, "start")
        task_status.started()
        while True:
            await trio.sleep(interval)
            reload_tls(gateway, "file_changed")


async def _on_sighup(gateway: Gateway, signals) -> None:
    async for _ in signals:
        gateway.log.reopen()  # log rotation: the file was renamed, start a new one
        reload_tls(gateway, "SIGHUP", force=True)
