"""The online signer: `fleet-ca serve` holds the issuing CA key and signs device certificates
for claims (enrolment) and current devices (renewal), over EST (RFC 7030) on HTTPS with
mutual TLS and on a unix socket.

- `policy.Signer`: what may be signed, rate limits, the record (no networking).
- `est.EstApp`: who is asking and the EST wire formats (no sockets).
- `server.serve_signer`: the trio listeners around h11.
"""

from .est import EstApp, Peer, certs_only, identify
from .policy import Issued, Signer, SignerLimits
from .server import JsonLog, ServeLimits, TlsContexts, serve_signer

__all__ = ["EstApp", "Issued", "JsonLog", "Peer", "ServeLimits", "Signer", "SignerLimits",
           "TlsContexts", "certs_only", "identify", "serve_signer"]
