"""Figure 7: from `revoke` to the live session closed.

A device holds an idle MQTT session; the operator revokes its certificate (`fleet-ca revoke`,
or `openssl ca -revoke` plus `-gencrl` for an openssl-made CA); the figure is the time until the
server closes that session. mosquitto reads its crlfile only at start: after waiting
`Sizes.revoke_wait` seconds the row says "never without restart", and whether a new handshake
with the revoked certificate is still accepted.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from dataclasses import replace
from typing import Any

from bench import mqttwire
from bench.context import Bench, server_notes
from bench.loadgen import LoadSpec, client_context
from bench.pki import PkiError, crl_path, revoke
from bench.results import Row
from bench.servers import Server, Unavailable


def figure_revocation(bench: Bench) -> list[Row]:
    case = "revoke a connected device"
    systems = ("fleetgate", "mosquitto")
    rows = {s: Row("7", case, s, "seconds to close", key="seconds", cpu_key=None,
                   lower_is_better=True) for s in systems}
    try:
        crl = crl_path(bench.pki)
    except PkiError as exc:
        for row in rows.values():
            row.unavailable = f"no CRL: {exc}"
        return list(rows.values())
    for system in systems:
        row = rows[system]
        if not bench.wanted(system):
            rows.pop(system)
            continue
        kw = {"crl": crl} if system == "mosquitto" else {}
        candidates = [d for d in bench.pki.devices[1:] if d.uuid not in bench.revoked]
        for run in range(min(bench.runs, len(candidates))):
            device = candidates[-1 - run]
            try:
                with bench.server(system, **kw) as server:
                    server_notes(row, server)
                    row.add(**_revoke_run(bench, server, device, system))
            except Unavailable as exc:
                row.unavailable = str(exc)
                break
            r = row.runs[-1]
            bench.log(f"  {system}: closed after {r['seconds']} s" if r["closed"]
                      else f"  {system}: still open {bench.sizes.revoke_wait:g} s after revoke")
        if row.runs and not any(r["closed"] for r in row.runs):
            extra = ("; new handshakes with the revoked certificate were still accepted"
                     if any(r.get("new_handshake_accepted") for r in row.runs) else "")
            row.verdict = "never without restart"
            row.notes.append(f"never without restart: the session was still open "
                             f"{bench.sizes.revoke_wait:g} s after the revocation in every run"
                             + extra)
    return list(rows.values())


def _revoke_run(bench: Bench, server: Server, device: Any, system: str) -> dict[str, Any]:
    spec = replace(bench.spec(server, "idle"), devices=((str(device.cert), str(device.key)),))
    sock = _mqtt_session(spec)
    try:
        t0 = time.monotonic()
        revoke(bench.pki, device)
        bench.revoked.add(device.uuid)
        t_cmd = time.monotonic() - t0
        closed_at = _wait_closed(sock, bench.sizes.revoke_wait)
    finally:
        sock.close()
    out: dict[str, Any] = {"device": device.uuid, "revoke_command_s": round(t_cmd, 3),
                           "closed": closed_at is not None,
                           "seconds": round(closed_at - t0, 3) if closed_at else None}
    if closed_at is None:
        try:
            _mqtt_session(spec).close()
            out["new_handshake_accepted"] = True
        except (OSError, ssl.SSLError, ConnectionError):
            out["new_handshake_accepted"] = False
    return out


def _mqtt_session(spec: LoadSpec) -> ssl.SSLSocket:
    ctx = client_context(spec, spec.devices[0])
    raw = socket.create_connection((spec.host, spec.port), timeout=10)
    sock = ctx.wrap_socket(raw, server_hostname="localhost")
    sock.sendall(mqttwire.connect(f"revoke-{time.monotonic_ns()}", keepalive=60))
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            raise ConnectionError("closed before CONNACK")
        head += chunk
    if head[0] >> 4 != mqttwire.PacketType.CONNACK or head[3] != 0:
        sock.close()
        raise ConnectionError(f"CONNACK {head.hex()}")
    return sock


def _wait_closed(sock: ssl.SSLSocket, wait: float) -> float | None:
    """When the server closed the session (EOF or reset), or None if open after ``wait``."""
    deadline = time.monotonic() + wait
    next_ping = 0.0
    sock.setblocking(False)
    while (now := time.monotonic()) < deadline:
        if now >= next_ping:  # a ping makes a half-dead connection show itself
            try:
                sock.send(mqttwire.PINGREQ)
            except ssl.SSLWantWriteError:
                pass
            except (OSError, ssl.SSLError):
                return time.monotonic()
            next_ping = now + 0.5
        readable, _, _ = select.select([sock], [], [], min(0.1, max(0.0, deadline - now)))
        if readable:
            try:
                while sock.recv(4096):
                    pass
                return time.monotonic()  # EOF
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            except (OSError, ssl.SSLError):
                return time.monotonic()
    return None


