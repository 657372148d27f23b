"""`fleet-ca`: the thin command line over `ca.store`. One command per noun and verb.

Every user mistake becomes one line on stderr and a distinct exit code (`ca.errors.ExitCode`,
listed in `fleet-ca --help`); a traceback appears only for a bug, and only with --debug.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import sqlite3
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from . import crl as crl_mod
from . import crlpub
from .cli_io import (
    ENV_HOME,
    ENV_PASSPHRASE,
    ENV_ROOT_PASSPHRASE,
    _home_path,
    _open,
    _print_signed,
    _progress,
    _read_input,
    _read_passphrase,
    _unlock,
    _write_stdout,
)
from .cli_lifecycle import (
    cmd_audit,
    cmd_claims,
    cmd_issue_claim,
    cmd_issue_registrar,
    cmd_rotate_issuing,
    cmd_serve,
)
from .csr import load_csr
from .errors import (
    BadInputError,
    CAError,
    ExitCode,
    HomeExistsError,
)
from .inventory import iso, serial_hex
from .keys import KeyType
from .labels import check_console_url, write_label_sheet
from .profiles import CLAIM_DAYS, CLAIM_DAYS_MAX, LEAF_DAYS, Kind, check_ca_name, check_days
from .store import CAHome, DeviceBundle, SignedCert, parse_selector, utcnow
from .verify import load_pem_chain, verify_chain

PROG = "fleet-ca"

EXIT_CODES = "\n".join(
    f"  {int(c):>3}  {text}"
    for c, text in [
        (ExitCode.OK, "success"),
        (ExitCode.INTERNAL, "internal error (a bug: rerun with --debug and report it)"),
        (ExitCode.USAGE, "bad command line"),
        (ExitCode.HOME_NOT_FOUND, "no CA home at --home"),
        (ExitCode.HOME_INVALID, "--home is not a fleet-ca home, or it is damaged"),
        (ExitCode.HOME_EXISTS, "init: the home already exists (never overwritten)"),
        (ExitCode.PASSPHRASE, "passphrase missing or wrong"),
        (ExitCode.NOT_FOUND, "unknown serial or network UUID"),
        (ExitCode.BAD_CSR, "malformed CSR, or a key the CA refuses"),
        (ExitCode.FORGED_CSR, "CSR signature invalid (no proof of possession)"),
        (ExitCode.ALREADY_REVOKED, "already revoked"),
        (ExitCode.OUTPUT, "output folder/file not writable, or already there"),
        (ExitCode.BAD_INPUT, "bad value (days, name, address, certificate file)"),
        (ExitCode.VERIFY_FAILED, "verify: the certificate does not chain to this CA"),
        (ExitCode.REVOKED, "verify: the certificate is revoked"),
        (ExitCode.INVENTORY, "inventory locked too long, full or read-only (nothing recorded)"),
        (ExitCode.AUDIT_BROKEN, "audit --verify: the audit trail's hash chain is broken"),
        (ExitCode.CLAIM_REFUSED, "a claim that is unknown, revoked, expired or used up"),
        (ExitCode.SIGN_REFUSED, "the online signer refused a request"),
        (130, "interrupted"),
    ]
)

MAIN_EPILOG = f"""\
The CA home is --home DIR (before or after the verb), else ${ENV_HOME}, else ./certs.
Signing verbs need the issuing key's passphrase: --passphrase-file F, else ${ENV_PASSPHRASE},
else a prompt when stdin is a terminal.

examples:
  fleet-ca init --no-passphrase                    # dev CA in ./certs
  fleet-ca issue device --count 100 --out bundles  # 100 device bundles
  fleet-ca revoke 5f3c9a1e-...                     # revoke a device, rewrite crl.pem
  fleet-ca list --json --status revoked

exit codes:
{EXIT_CODES}
"""


class UsageError(CAError):
    exit_code = ExitCode.USAGE


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting: one line, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        where = self.prog.removeprefix(PROG).strip()
        raise UsageError(f"{where + ': ' if where else ''}{message} (see --help)")


def _add_home(p: argparse.ArgumentParser, default: object) -> None:
    p.add_argument(
        "--home", metavar="DIR", default=default,
        help=f"the CA home (default ${ENV_HOME}, else ./certs)",
    )


def _add_passphrase(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--passphrase-file", metavar="F", type=Path,
        help=f"file holding the CA key passphrase (else ${ENV_PASSPHRASE}, else a prompt)",
    )


def _days(text: str) -> int:
    try:
        return check_days(int(text))
    except (ValueError, BadInputError):
        raise argparse.ArgumentTypeError(f"not a day count from 1 to 36500: {text!r}") from None


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return n


def _uuid(text: str) -> uuid.UUID:
    t = text.strip()
    t = t[9:] if t.lower().startswith("urn:uuid:") else t
    try:
        return uuid.UUID(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {text!r}") from None


def _sub(sub: argparse._SubParsersAction, name: str, help: str, examples: str
         ) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name, help=help, description=help, epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_home(p, argparse.SUPPRESS)
    return p


def _version() -> str:
    try:
        return importlib.metadata.version("fleetgate")
    except importlib.metadata.PackageNotFoundError:  # a source tree never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="fleetgate's certificate authority: a root, an issuing CA, and a "
        "certificate (and key pair) for every device.",
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_home(parser, None)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of bugs")
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True,
                                parser_class=_Parser)

    p = _sub(sub, "init", "make a new CA: self-signed root (10 y) and issuing CA (5 y)",
             "  fleet-ca init --no-passphrase --name 'fleetgate demo'\n"
             "  fleet-ca --home /srv/ca init --passphrase-file /run/secrets/ca-pass\n"
             "  FLEET_CA_PASSPHRASE=... fleet-ca init --key-type rsa-3072\n")
    p.add_argument("--name", default="fleetgate", help="CA display name (default fleetgate)")
    p.add_argument("--key-type", choices=[k.value for k in KeyType], default=KeyType.EC_P256.value)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--passphrase-file", metavar="F", type=Path,
                   help=f"file holding the passphrase for the CA keys (else ${ENV_PASSPHRASE}, "
                   "else a prompt)")
    g.add_argument("--no-passphrase", action="store_true",
                   help="dev CA: leave the CA keys unencrypted")
    p.set_defaults(func=cmd_init)

    what = "issue a device, server, operator, claim or registrar certificate"
    issue = sub.add_parser("issue", help=what, description=what)
    _add_home(issue, argparse.SUPPRESS)
    isub = issue.add_subparsers(dest="noun", metavar="KIND", required=True, parser_class=_Parser)

    p = _sub(isub, "device", "generate device key pairs and certificates: OUT/<uuid>/ bundles",
             "  fleet-ca issue device                        # one bundle in ./bundles\n"
             "  fleet-ca issue device --count 1000 --out B   # 1000 bundles\n"
             "  fleet-ca issue device --network 0b7e...-... --days 730 --p12\n")
    p.add_argument("--network", type=_uuid, metavar="UUID", help="network UUID (default: fresh)")
    p.add_argument("--count", type=_positive, default=1, metavar="N")
    p.add_argument("--days", type=_days, default=LEAF_DAYS, metavar="D",
                   help=f"validity (default {LEAF_DAYS})")
    p.add_argument("--out", type=Path, default=Path("bundles"), metavar="DIR",
                   help="output folder (default ./bundles)")
    p.add_argument("--p12", action="store_true", help="also write device.p12 (key + chain)")
    p.add_argument("--p12-password-file", type=Path, metavar="F",
                   help="encrypt device.p12 with the password in F (default: unencrypted)")
    p.add_argument("--console", metavar="URL", help="the gateway console's https://HOST:PORT:"
                   " the labels' QR codes become its claim links (default: the code alone)")
    _add_passphrase(p)
    p.set_defaults(func=cmd_issue_device)

    p = _sub(isub, "server", "a TLS server certificate: OUT/server.crt (+ chain), server.key",
             "  fleet-ca issue server --dns localhost --ip 127.0.0.1 --out certs/server\n"
             "  fleet-ca issue server --dns gw.example.com --dns '*.gw.example.com' --out S\n")
    p.add_argument("--dns", action="append", default=[], metavar="NAME")
    p.add_argument("--ip", action="append", default=[], metavar="ADDR")
    p.add_argument("--days", type=_days, default=LEAF_DAYS, metavar="D")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    _add_passphrase(p)
    p.set_defaults(func=cmd_issue_server)

    p = _sub(isub, "operator", "an operator (HTTP API client) certificate",
             "  fleet-ca issue operator --name alice --out certs/operator\n")
    p.add_argument("--name", required=True)
    p.add_argument("--days", type=_days, default=LEAF_DAYS, metavar="D")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    _add_passphrase(p)
    p.set_defaults(func=cmd_issue_operator)

    p = _sub(isub, "claim", "a claim certificate for a production batch (N uses, short-lived)",
             "  fleet-ca issue claim --batch line3-2026w10 --uses 500 --expires-in 14 "
             "--out claims/line3\n")
    p.add_argument("--batch", required=True, metavar="NAME")
    p.add_argument("--uses", type=_positive, required=True, metavar="N",
                   help="how many device identities it may be exchanged for")
    p.add_argument("--expires-in", type=_days, default=CLAIM_DAYS, metavar="DAYS",
                   help=f"validity (default {CLAIM_DAYS}, at most {CLAIM_DAYS_MAX})")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    _add_passphrase(p)
    p.set_defaults(func=cmd_issue_claim)

    p = _sub(isub, "registrar", "a registrar certificate (a client of the online signer)",
             "  fleet-ca issue registrar --name gateway1 --out certs/registrar\n")
    p.add_argument("--name", required=True)
    p.add_argument("--days", type=_days, default=LEAF_DAYS, metavar="D")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    _add_passphrase(p)
    p.set_defaults(func=cmd_issue_registrar)

    p = _sub(sub, "sign", "sign a device's CSR (proof of possession checked; subject ignored)",
             "  fleet-ca sign device.csr --out device.crt\n"
             "  fleet-ca sign - --network 0b7e...-... < device.csr > device.crt\n")
    p.add_argument("csr", metavar="CSR", help="CSR file (PEM or DER), or - for stdin")
    p.add_argument("--network", type=_uuid, metavar="UUID", help="network UUID (default: fresh)")
    p.add_argument("--days", type=_days, default=LEAF_DAYS, metavar="D")
    p.add_argument("--out", type=Path, metavar="FILE", help="certificate chain (default stdout)")
    _add_passphrase(p)
    p.set_defaults(func=cmd_sign)

    p = _sub(sub, "revoke", "revoke a certificate (serial) or a network's (UUID); rewrite crl.pem",
             "  fleet-ca revoke 0b7e2c1a-4d5e-4f60-8a9b-0c1d2e3f4a5b --reason key-compromise\n"
             "  fleet-ca revoke 5FB0C8EB15B7A5414EFB8861BDA25FFF65B63E76\n")
    p.add_argument("selector", metavar="SERIAL|UUID")
    p.add_argument("--reason", default="unspecified", choices=list(crl_mod.REASONS))
    _add_passphrase(p)
    p.set_defaults(func=cmd_revoke)

    p = _sub(sub, "crl", "regenerate crl.pem (new thisUpdate/nextUpdate; run it from a timer)",
             "  fleet-ca crl\n  fleet-ca crl --if-due              # what the systemd timer runs\n"
             "  fleet-ca crl --url http://ca.example.com:8080   # name it in new certificates\n")
    p.add_argument("--if-due", action="store_true",
                   help="only when a CRL reaches its nextUpdate within --within days")
    p.add_argument("--within", type=_days, default=crlpub.DUE_WITHIN.days, metavar="DAYS",
                   help=f"with --if-due (default {crlpub.DUE_WITHIN.days})")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--url", metavar="URL", help="publish the CRLs under URL (fleet-ca serve "
                   "--crl-listen): certificates issued from now on name URL/crl/<id>.crl")
    g.add_argument("--no-url", action="store_true", help="stop naming a CRL URL")
    _add_passphrase(p)
    p.set_defaults(func=cmd_crl)

    p = _sub(sub, "list", "list the inventory",
             "  fleet-ca list\n  fleet-ca list --json --kind device --status revoked\n"
             "  fleet-ca list --expiring-within 30\n")
    p.add_argument("--json", action="store_true")
    p.add_argument("--kind", choices=list(Kind.ALL))
    p.add_argument("--status", choices=["valid", "revoked", "expired"])
    p.add_argument("--expiring-within", type=_days, metavar="DAYS")
    p.set_defaults(func=cmd_list)

    p = _sub(sub, "show", "show the certificate(s) of a serial or network UUID",
             "  fleet-ca show 0b7e2c1a-4d5e-4f60-8a9b-0c1d2e3f4a5b\n"
             "  fleet-ca show 5FB0C8EB15B7A5414EFB8861BDA25FFF65B63E76 --pem\n")
    p.add_argument("selector", metavar="SERIAL|UUID")
    p.add_argument("--json", action="store_true")
    p.add_argument("--pem", action="store_true", help="print the certificate(s) as PEM")
    p.set_defaults(func=cmd_show)

    p = _sub(sub, "verify", "verify a certificate's chain and revocation status, offline",
             "  fleet-ca verify bundles/0b7e.../device.crt\n")
    p.add_argument("cert", type=Path, metavar="CERT")
    p.set_defaults(func=cmd_verify)

    p = _sub(sub, "renew", "a new certificate (and key, or for a CSR) for the same network UUID",
             "  fleet-ca renew 0b7e2c1a-4d5e-4f60-8a9b-0c1d2e3f4a5b --out renewed\n"
             "  fleet-ca renew 0b7e2c1a-... --csr device.csr --out device.crt\n")
    p.add_argument("network", type=_uuid, metavar="UUID")
    p.add_argument("--csr", type=Path, metavar="FILE")
    p.add_argument("--days", type=_days, default=LEAF_DAYS, metavar="D")
    p.add_argument("--out", type=Path, metavar="DIR|FILE",
                   help="bundle folder (default ./bundles), or with --csr the chain file "
                   "(default stdout)")
    _add_passphrase(p)
    p.set_defaults(func=cmd_renew)

    p = _sub(sub, "audit", "list the audit trail (every issue, renew, revoke, CRL), or verify "
             "its hash chain", "  fleet-ca audit show --since 2026-01-01\n"
             "  fleet-ca audit verify             # the same as --verify\n")
    p.add_argument("what", nargs="?", choices=("show", "verify"), default="show",
                   help="show (the default) or verify, as `fleet-gateway audit`")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--verify", action="store_true",
                   help="check the whole chain; exit 16 naming the first broken entry")
    p.add_argument("--since", type=_date, metavar="YYYY-MM-DD[THH:MM:SSZ]")
    p.set_defaults(func=cmd_audit)

    p = _sub(sub, "serve", "the online signer: EST over HTTPS (mutual TLS) and/or a unix socket",
             "  fleet-ca serve --listen 0.0.0.0:8443 --tls-cert certs/signer/server.crt \\\n"
             "      --tls-key certs/signer/server.key --unix /run/fleet-ca/signer.sock \\\n"
             "      --crl-listen 0.0.0.0:8080\n")
    p.add_argument("--listen", metavar="HOST:PORT", help="HTTPS address for EST")
    p.add_argument("--tls-cert", type=Path, metavar="F", help="server certificate (+ chain)")
    p.add_argument("--tls-key", type=Path, metavar="F")
    p.add_argument("--unix", type=Path, metavar="PATH", help="unix socket for registrars")
    p.add_argument("--crl-listen", metavar="HOST:PORT", help="plain-HTTP address serving the "
                   "CRLs alone (/crl.pem, /crl/<id>.crl; see fleet-ca crl --url)")
    _add_passphrase(p)
    p.set_defaults(func=cmd_serve)

    p = _sub(sub, "claims", "list claim certificates and their uses left",
             "  fleet-ca claims --json\n")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_claims)

    p = _sub(sub, "rotate-issuing", "ceremony: a new issuing CA from the root; the old one's "
             "certificates stay valid until they expire",
             "  fleet-ca rotate-issuing --root-passphrase-file /media/usb/root.pass\n")
    _add_passphrase(p)
    p.add_argument("--root-passphrase-file", metavar="F", type=Path,
                   help=f"the root key's passphrase (else ${ENV_ROOT_PASSPHRASE}, else a prompt)")
    p.set_defaults(func=cmd_rotate_issuing)
    return parser


def _date(text: str) -> dt.datetime:
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(text, fmt).replace(tzinfo=dt.UTC)
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(f"{text!r} is not YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ")


# -- commands ------------------------------------------------------------------------------

def cmd_init(args: argparse.Namespace) -> int:
    path = _home_path(args)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        # Say so before asking for a passphrase.
        raise HomeExistsError(f"{path} already exists and is not empty: refusing to overwrite")
    check_ca_name(args.name)  # a bad name before any passphrase prompt
    passphrase = None if args.no_passphrase else _read_passphrase(args, confirm=True)
    home = CAHome.init(path, name=args.name, key_type=args.key_type, passphrase=passphrase)
    with home:
        print(f"CA home {home.path}")
        print(f"  root     {home.root_cert.subject.rfc4514_string()}"
              f"  until {iso(home.root_cert.not_valid_after_utc)}")
        print(f"  issuing  {home.issuing_cert.subject.rfc4514_string()}"
              f"  until {iso(home.issuing_cert.not_valid_after_utc)}")
        if passphrase is None:
            print("  DEV CA: the CA keys are NOT encrypted (--no-passphrase); "
                  "never use it in production")
        else:
            print("  CA keys encrypted with the passphrase; move root.key offline now "
                  "(see docs/operations.md)")
    return 0


def cmd_issue_device(args: argparse.Namespace) -> int:
    p12_password = None
    if args.p12_password_file is not None:
        if not args.p12:
            raise UsageError("--p12-password-file needs --p12")
        p12_password = _read_input(args.p12_password_file, "password file").rstrip(b"\r\n")
        if not p12_password:
            raise BadInputError(f"password file {args.p12_password_file} is empty")
    console = check_console_url(args.console) if args.console else None
    with _open(args, sign=True) as home:
        start = time.perf_counter()
        with _progress(args.count, "issuing") as progress:
            bundles = home.issue_devices(
                args.out, count=args.count, network=args.network, days=args.days,
                p12=args.p12, p12_password=p12_password, progress=progress,
            )
        elapsed = time.perf_counter() - start
        sheet = write_label_sheet(Path(args.out), bundles, now=dt.datetime.now(dt.UTC),
                                  console_url=console)
        _write_stdout("".join(f"{b.network_uuid} {serial_hex(b.serial)}\n" for b in bundles))
        if sheet is not None:
            print(f"owner-code labels: {sheet.absolute()} (print, then keep or shred)",
                  file=sys.stderr)
        print(f"issued {len(bundles)} device bundle(s) in {Path(args.out).absolute()}"
              f" ({len(bundles) / max(elapsed, 1e-9):,.0f}/s)", file=sys.stderr)
    return 0


def cmd_issue_server(args: argparse.Namespace) -> int:
    with _open(args, sign=True) as home:
        files = home.issue_server(args.out, dns=args.dns, ips=args.ip, days=args.days)
        print(f"server certificate serial {serial_hex(files.serial)}: {files.cert_path},"
              f" key {files.key_path}")
    return 0


def cmd_issue_operator(args: argparse.Namespace) -> int:
    with _open(args, sign=True) as home:
        files = home.issue_operator(args.out, name=args.name, days=args.days)
        print(f"operator certificate serial {serial_hex(files.serial)}: {files.cert_path},"
              f" key {files.key_path}, CA {files.ca_path}")
    return 0










def cmd_sign(args: argparse.Namespace) -> int:
    data = _read_input(args.csr, "CSR")
    load_csr(data)  # a bad CSR is reported before any passphrase prompt
    with _open(args, sign=True) as home:
        signed = home.sign_csr(data, network=args.network, days=args.days, out=args.out)
    _print_signed(signed, args.out)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    selector = parse_selector(args.selector)  # bad syntax before any passphrase prompt
    with _open(args, sign=False) as home:
        home.find(selector)  # an unknown serial, too
        _unlock(home, args)
        records = home.revoke(selector, reason=args.reason)
        for r in records:
            print(f"revoked {r.kind} serial {serial_hex(r.serial)}"
                  + (f" network {r.network_uuid}" if r.network_uuid else "")
                  + f" reason {r.reason}")
        print(f"rewrote {home.path / 'crl.pem'}")
    return 0


def cmd_crl(args: argparse.Namespace) -> int:
    if args.url is not None or args.no_url:
        url = None if args.no_url else crlpub.check_base(args.url)
        with _open(args, sign=False) as home:
            crlpub.save_base(home.path, url)
        print(f"certificates issued from now on name {url}/crl/<issuing key id>.crl" if url
              else "certificates issued from now on name no CRL URL")
        return 0
    if args.if_due:  # decided before any passphrase is asked for
        with _open(args, sign=False) as home:
            crls, now = home.load_crls(), utcnow()
            within = dt.timedelta(days=args.within)
            if not crlpub.due(crls, now, within):
                when = crlpub.next_update(crls)
                print(f"not due: the first nextUpdate is {iso(when)}"  # type: ignore[arg-type]
                      f" (more than {args.within} days away)")
                return 0
    with _open(args, sign=True) as home:
        path = home.write_crl()
        n = len(home.inventory.revoked())
        print(f"rewrote {path} ({n} revoked)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    now = utcnow()
    with _open(args, sign=False) as home:
        within = dt.timedelta(days=args.expiring_within) if args.expiring_within else None
        records = home.inventory.select(now=now, kind=args.kind, status=args.status,
                                        expiring_within=within)
    if args.json:
        _write_stdout(json.dumps([r.to_json(now) for r in records], indent=2) + "\n")
        return 0
    lines = [f"{'SERIAL':<40} {'KIND':<8} {'STATUS':<7} {'NOT AFTER':<20} NAME"]
    for r in records:
        name = str(r.network_uuid) if r.network_uuid else r.subject
        lines.append(f"{serial_hex(r.serial):<40} {r.kind:<8} {r.status_at(now):<7} "
                     f"{iso(r.not_after):<20} {name}")
    _write_stdout("\n".join(lines) + "\n")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    now = utcnow()
    with _open(args, sign=False) as home:
        records = home.find(args.selector)
    if args.pem:
        _write_stdout("".join(r.certificate().public_bytes(Encoding.PEM).decode()
                              for r in records))
    elif args.json:
        _write_stdout(json.dumps([r.to_json(now) for r in records], indent=2) + "\n")
    else:
        out = []
        for r in records:
            out += [f"{k + ':':<12} {v}" for k, v in r.to_json(now).items() if v is not None]
            out.append("")
        _write_stdout("\n".join(out))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    data = _read_input(args.cert, "certificate")
    certs = load_pem_chain(data)
    with _open(args, sign=False) as home:
        result = verify_chain(certs, root=home.root_cert,
                              issuing=[home.issuing_cert, *home.previous_issuing],
                              crl=home.load_crls(), now=utcnow())
    print(f"OK {result.subject} serial {serial_hex(result.serial)}: "
          + " <- ".join(result.chain))
    return 0


def cmd_renew(args: argparse.Namespace) -> int:
    with _open(args, sign=True) as home:
        if args.csr is not None:
            data = _read_input(args.csr, "CSR")
            signed = home.renew(args.network, csr_data=data, out_file=args.out, days=args.days)
            assert isinstance(signed, SignedCert)
            _print_signed(signed, args.out)
            return 0
        bundle = home.renew(args.network, out_dir=args.out or Path("bundles"), days=args.days)
        assert isinstance(bundle, DeviceBundle)
        print(f"renewed {bundle.network_uuid}: serial {serial_hex(bundle.serial)} in {bundle.dir}")
    return 0


# -- entry point ---------------------------------------------------------------------------





def main(argv: Sequence[str] | None = None) -> int:
    """Run `fleet-ca` with `argv` (default sys.argv[1:]); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except CAError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except sqlite3.Error as exc:
        # Locked past the busy timeout, disk full, read-only: the transaction rolled back.
        print(f"{PROG}: inventory error: {exc} (nothing was recorded)", file=sys.stderr)
        return int(ExitCode.INVENTORY)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if debug:
            raise
        print(f"{PROG}: internal error: {type(exc).__name__}: {exc} "
              "(a bug: rerun with --debug and report it)", file=sys.stderr)
        return int(ExitCode.INTERNAL)


if __name__ == "__main__":
    sys.exit(main())

