"""`fleet-ca`'s lifecycle verbs: the audit trail, issuing-CA rotation, claims and
registrars, and the online signer. Thin: parse nothing, call the library, print."""

from __future__ import annotations

import argparse
import json
import sys

from . import audit, claims
from .cli_io import ENV_ROOT_PASSPHRASE, _open, _read_passphrase, _write_stdout
from .errors import BadInputError
from .inventory import iso, serial_hex
from .keys import is_encrypted_pem
from .store import utcnow


def cmd_audit(args: argparse.Namespace) -> int:
    with _open(args, sign=False) as home:
        conn = home.inventory.connection
        if args.verify or args.what == "verify":
            n = audit.verify(conn)  # raises AuditBrokenError (exit 16)
            print(f"audit trail intact: {n} entries")
            return 0
        for e in audit.entries(conn, since=args.since):
            if args.json:
                line = json.dumps(e.to_json(), sort_keys=True)
            else:
                details = " ".join(f"{k}={v}" for k, v in e.details.items() if v is not None)
                line = f"{e.seq:>6} {iso(e.at)} {e.actor} {e.action} {e.subject} {details}"
            sys.stdout.write(line + "\n")
    sys.stdout.flush()
    return 0


def cmd_rotate_issuing(args: argparse.Namespace) -> int:
    with _open(args, sign=True) as home:
        root_passphrase = None
        root_key = home.path / "root.key"
        if root_key.exists() and is_encrypted_pem(root_key.read_bytes()[:64]):
            root_passphrase = _read_passphrase(
                args, file_attr="root_passphrase_file", env=ENV_ROOT_PASSPHRASE,
                prompt="root CA passphrase: ")
        old_cert = home.issuing_cert
        cert = home.rotate_issuing(root_passphrase)
    print(f"new issuing CA {cert.subject.rfc4514_string()} serial {serial_hex(cert.serial_number)}"
          f" until {iso(cert.not_valid_after_utc)}")
    print(f"previous issuing CA serial {serial_hex(old_cert.serial_number)} keeps its CRL in"
          " crl.pem until it expires; copy ca-chain.pem and crl.pem to the gateway")
    return 0


def cmd_issue_claim(args: argparse.Namespace) -> int:
    with _open(args, sign=True) as home:
        files = claims.issue_claim(home, args.out, batch=args.batch, uses=args.uses,
                                   days=args.expires_in)
        print(f"claim {args.batch} serial {serial_hex(files.serial)} ({args.uses} uses):"
              f" {files.cert_path}, key {files.key_path}, CA {files.ca_path}")
    return 0


def cmd_issue_registrar(args: argparse.Namespace) -> int:
    with _open(args, sign=True) as home:
        files = claims.issue_registrar(home, args.out, name=args.name, days=args.days)
        print(f"registrar certificate serial {serial_hex(files.serial)}: {files.cert_path},"
              f" key {files.key_path}, CA {files.ca_path}")
    return 0


def cmd_claims(args: argparse.Namespace) -> int:
    now = utcnow()
    with _open(args, sign=False) as home:
        found = claims.claims(home.inventory.connection)
    if args.json:
        _write_stdout(json.dumps([c.to_json() for c in found], indent=2) + "\n")
        return 0
    lines = [f"{'SERIAL':<40} {'BATCH':<24} {'USES LEFT':>11} {'STATUS':<8} NOT AFTER"]
    for c in found:
        status = "revoked" if c.revoked else "expired" if now > c.not_after else "valid"
        lines.append(f"{serial_hex(c.serial):<40} {c.batch:<24} "
                     f"{f'{c.uses_left}/{c.uses_total}':>11} {status:<8} {iso(c.not_after)}")
    _write_stdout("\n".join(lines) + "\n")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import trio  # only this verb needs it

    from .signer import Signer, TlsContexts, serve_signer
    https = crl_http = None
    if args.listen:
        https = _address(args.listen, "--listen")
        if not args.tls_cert or not args.tls_key:
            raise BadInputError("--listen HOST:PORT needs --tls-cert and --tls-key")
    if args.crl_listen:
        crl_http = _address(args.crl_listen, "--crl-listen")
    if https is None and args.unix is None:
        raise BadInputError("give --listen HOST:PORT (HTTPS) and/or --unix PATH")
    with _open(args, sign=True) as home:
        home.actor = "signer"
        tls = TlsContexts(home.path, args.tls_cert, args.tls_key) if https else None
        try:
            trio.run(lambda: serve_signer(Signer(home), https=https, tls=tls, unix=args.unix,
                                          crl_http=crl_http))
        except OSError as exc:
            raise BadInputError(f"cannot serve: {exc}") from None
    return 0


def _address(text: str, flag: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise BadInputError(f"{flag} takes HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)
