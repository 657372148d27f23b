"""Server CPU per TLS handshake on fleetgate's own context, in memory (no sockets, no trio).

What OpenSSL costs a server for one mTLS handshake is the floor under every connect figure;
this measures it for the options that decide it: the CRL check, the session ticket a full
handshake hands out, a resumed handshake, TLS 1.2. Only the server's `do_handshake` calls are
timed (process CPU time), so the client's work does not count.

    .venv/bin/python bench/handshake_cost.py            # --count 400
"""

from __future__ import annotations

import argparse
import ssl
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pki import make_pki  # noqa: E402
from gateway.tls import build_server_context  # noqa: E402


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
               session: ssl.SSLSession | None) -> tuple[float, ssl.SSLObject, ssl.SSLObject]:
    """One handshake over memory buffers: (server CPU seconds, server, client)."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost", session=session)
    spent, server_done, client_done = 0.0, False, False
    while not (server_done and client_done):
        if not client_done:
            try:
                client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        if not server_done:
            started = time.process_time()
            try:
                server.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
            spent += time.process_time() - started
        c_in.write(s_out.read())
    try:
        client.read(1)  # takes in the session ticket, if any
    except ssl.SSLWantReadError:
        pass
    return spent, server, client


def measure(label: str, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, count: int,
            *, resume: bool = False) -> None:
    _, _, client = _handshake(server_ctx, client_ctx, None)
    session = client.session if resume else None
    total, resumed = 0.0, 0
    for _ in range(count):
        spent, server, client = _handshake(server_ctx, client_ctx, session)
        total += spent
        resumed += server.session_reused
        if resume:
            session = client.session
    print(f"| {label} | {total / count * 1e6:,.0f} | {resumed}/{count} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=400, help="handshakes per line (default 400)")
    count = p.parse_args().count
    pki = make_pki(Path(tempfile.mkdtemp(prefix="handshake-cost-")) / "pki", 1)
    device = pki.devices[0]

    def server(*, tickets: int = 1, crl_check: bool = True) -> ssl.SSLContext:
        ctx = build_server_context(pki.root, pki.home / "crl.pem", pki.server_cert,
                                   pki.server_key)
        ctx.num_tickets = tickets
        if not crl_check:
            ctx.verify_flags &= ~ssl.VERIFY_CRL_CHECK_LEAF
        return ctx

    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(str(pki.root))
    client.load_cert_chain(str(device.cert), str(device.key))
    print("| handshake (server side, TLS 1.3 unless said) | µs of server CPU | resumed |")
    print("|---|---:|---:|")
    policy = server()
    measure("full, as the gateway runs it (CRL check, one session ticket)", policy, client,
            count)
    measure("resumed with the ticket", policy, client, count, resume=True)
    measure("full, no ticket", server(tickets=0), client, count)
    measure("full, no ticket, no CRL check", server(tickets=0, crl_check=False), client, count)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    measure("TLS 1.2 full, as the gateway runs it", policy, client, count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
