"""`fleet-gateway`: the gateway's command line (thin: parse, build the config, run).

EXAMPLES
    fleet-gateway serve --ca-home certs
    fleet-gateway serve --config /etc/fleetgate/gateway.toml --mqtt 0.0.0.0:8883
    fleet-gateway serve --ca-home certs --mqtt 127.0.0.1:0     # any free port, logged
    fleet-gateway serve --ca-home certs --data /var/lib/fleetgate --http 0.0.0.0:8443

Exit codes: 0 stopped by SIGTERM/SIGINT; 2 bad usage; 3 bad configuration or missing/unusable
file; 4 the listener could not be opened (address in use, permission).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from enum import IntEnum
from pathlib import Path
from typing import TypeVar

import trio

from .app import Gateway, open_log, run_gateway
from .config import load_config
from .errors import ConfigError


class ExitCode(IntEnum):
    OK = 0
    USAGE = 2
    CONFIG = 3
    LISTEN = 4


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleet-gateway",
        description="MQTT over mutual TLS: admits device certificates, jails each network.",
        epilog=__doc__.split("EXAMPLES", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    serve = verbs.add_parser("serve", help="run the gateway until SIGTERM/SIGINT")
    serve.add_argument("--config", type=Path, help="TOML config file (flags override it)")
    serve.add_argument("--ca-home", type=Path,
                       help="folder with root.crt and crl.pem (default: $FLEET_CA_HOME)")
    serve.add_argument("--cert", type=Path, help="server certificate (PEM)")
    serve.add_argument("--key", type=Path, help="server private key (PEM)")
    serve.add_argument("--mqtt", metavar="HOST:PORT", help="MQTT/TLS listener (127.0.0.1:8883)")
    serve.add_argument("--http", metavar="HOST:PORT",
                       help='HTTPS API listener (127.0.0.1:8443; "off"; needs --data)')
    serve.add_argument("--data", type=Path, help="data folder for the store")
    serve.add_argument("--log-file", help='JSON log destination ("-" for stderr)')
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed its one line already
        return ExitCode.OK if exc.code == 0 else ExitCode.USAGE
    try:
        config = load_config(
            args.config,
            {
                "ca_home": args.ca_home,
                "cert": args.cert,
                "key": args.key,
                "mqtt": args.mqtt,
                "http": args.http,
                "data": args.data,
                "log_file": args.log_file,
            },
        )
        if config.ca_home is None and os.environ.get("FLEET_CA_HOME"):
            # Like fleet-ca: the flag, then the config file, then the environment.
            config = dataclasses.replace(config, ca_home=Path(os.environ["FLEET_CA_HOME"]))
        log = open_log(config)
        gateway = Gateway(config, log=log)
    except ConfigError as exc:
        print(f"fleet-gateway: error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG

    async def run() -> None:
        await run_gateway(gateway)

    try:
        trio.run(run)
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return ExitCode.OK
    except (OSError, ConfigError, BaseExceptionGroup) as exc:
        config_error = _find(exc, ConfigError)
        if config_error is not None:
            print(f"fleet-gateway: error: {config_error}", file=sys.stderr)
            return ExitCode.CONFIG
        oserror = _find(exc, OSError)
        if oserror is None:
            raise
        where = oserror.filename if isinstance(oserror.filename, str) else config.mqtt
        print(f"fleet-gateway: error: cannot listen on {where}: "
              f"{oserror.strerror or oserror}", file=sys.stderr)
        return ExitCode.LISTEN
    return ExitCode.OK


E = TypeVar("E", bound=BaseException)


def _find(exc: BaseException, kind: type[E]) -> E | None:
    """The first `kind` inside (nested) exception groups, or None."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None


if __name__ == "__main__":
    sys.exit(main())
