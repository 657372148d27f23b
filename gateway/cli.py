"""`fleet-gateway`: the gateway's command line (thin: parse, build the config, run).

EXAMPLES
    fleet-gateway serve --ca-home certs
    fleet-gateway check-config --config /etc/fleetgate/gateway.toml   # effective config, TLS files
    fleet-gateway backup create /backup/2026-12-05 --data /var/lib/fleetgate   # online copy
    fleet-gateway backup restore /backup/2026-12-05 --data /var/lib/fleetgate  # gateway stopped
    fleet-gateway audit verify --data /var/lib/fleetgate    # the audit trail's hash chain
    fleet-gateway serve --config /etc/fleetgate/gateway.toml --mqtt 0.0.0.0:8883
    fleet-gateway serve --ca-home certs --mqtt 127.0.0.1:0     # any free port, logged
    fleet-gateway serve --ca-home certs --data /var/lib/fleetgate --http 0.0.0.0:8443
    fleet-gateway serve --ca-home certs --store postgresql://fleetgate@db:5432/fleetgate
    fleet-gateway serve --config gateway.toml --workers 4 --node gw-a  # gw-a-1 .. gw-a-4
    fleet-gateway cluster status --config gateway.toml     # nodes, heartbeats, connections

Exit codes: 0 stopped by SIGTERM/SIGINT (check-config: the configuration is usable); 2 bad
usage; 3 bad configuration or missing/unusable file; 4 the listener could not be opened
(address in use, permission); 5 a backup or restore failed; 7 `audit verify`: the audit
trail's hash chain is broken (the first broken entry is named); 8 the store URL is
malformed; 9 the PostgreSQL store cannot be reached at start; 10 another live node holds
this node's name; 11 this node was declared dead by another (its heartbeat lapsed); 12
`cluster status`: a node is not alive; 13 the data folder is in use by another
fleet-gateway (its pid is named).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from enum import IntEnum
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TypeVar

import trio

from .app import open_log, run_gateway
from .config import GatewayConfig, check_store, load_config
from .errors import ConfigError, GatewayError
from .storage.errors import BadStoreURL, FolderInUse, StoreUnavailable
from .tls import TLSContexts


class ExitCode(IntEnum):
    OK = 0
    USAGE = 2
    CONFIG = 3
    LISTEN = 4
    BACKUP = 5
    ACCOUNT = 6  # gateway.accounts.cli.EXIT_ACCOUNT
    AUDIT_BROKEN = 7  # gateway.audit.EXIT_BROKEN
    STORE_URL = 8  # gateway.storage.BadStoreURL
    STORE_UNAVAILABLE = 9  # gateway.storage.StoreUnavailable, at start
    NODE_NAME_IN_USE = 10  # gateway.cluster.nodes.NodeNameInUse
    NODE_FENCED = 11  # gateway.cluster.nodes.NodeFenced
    CLUSTER_UNHEALTHY = 12
    DATA_IN_USE = 13  # gateway.storage.FolderInUse


SERVE_EXAMPLES = """examples:
  fleet-gateway serve --ca-home certs                    # MQTT on 127.0.0.1:8883, nothing stored
  fleet-gateway serve --ca-home certs --data var/data    # + store, HTTPS API on 127.0.0.1:8443
  fleet-gateway serve --ca-home certs --store postgresql://fleetgate@db:5432/fleetgate
  fleet-gateway serve --config /etc/fleetgate/gateway.toml --mqtt 0.0.0.0:8883
  fleet-gateway serve --ca-home certs --mqtt 127.0.0.1:0 # any free port (see `listening`)
  fleet-gateway serve --ca-home certs --metrics 127.0.0.1:9464 --log-level warning
  fleet-gateway serve --config gateway.toml --workers 4  # 4 processes, one set of ports
  kill -HUP <pid>   # reload the TLS files and the CRL, reopen the log file (no restart)
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleet-gateway",
        description="MQTT over mutual TLS: admits device certificates, jails each network.",
        epilog=__doc__.split("EXAMPLES", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fleet-gateway {_version()}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    serve = verbs.add_parser(
        "serve", help="run the gateway until SIGTERM/SIGINT",
        description="Serve MQTT over mutual TLS (and, with --data, the HTTPS API and the "
                    "console) until SIGTERM or SIGINT. Options: defaults, then --config, then "
                    "these flags; `fleet-gateway check-config` prints the result. SIGHUP "
                    "reloads the TLS files and the CRL and reopens the log file.",
        epilog=SERVE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    check = verbs.add_parser(
        "check-config", help="print the effective configuration and check its TLS files",
        description="Load the configuration as `serve` would (defaults, --config, flags), "
                    "load its TLS files, and print every option as TOML. Exit 0 when "
                    "`serve` would start with it, 3 with the reason otherwise.",
        epilog="example:\n  fleet-gateway check-config --config /etc/fleetgate/gateway.toml "
               "--log-level debug\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    for verb in (serve, check):
        verb.add_argument("--config", type=Path, help="TOML config file (flags override it)")
        verb.add_argument("--ca-home", type=Path,
                          help="folder with root.crt and crl.pem (default: $FLEET_CA_HOME)")
        verb.add_argument("--cert", type=Path, help="server certificate (PEM)")
        verb.add_argument("--key", type=Path, help="server private key (PEM)")
        verb.add_argument("--mqtt", metavar="HOST:PORT",
                          help="MQTT/TLS listener (127.0.0.1:8883)")
        verb.add_argument("--http", metavar="HOST:PORT",
                          help='HTTPS API listener (127.0.0.1:8443; "off"; needs a store)')
        verb.add_argument("--metrics", metavar="HOST:PORT",
                          help='plain-HTTP /metrics listener for Prometheus ("off")')
        verb.add_argument("--data", type=Path, help="data folder for the store")
        verb.add_argument("--store", metavar="URL",
                          help="PostgreSQL store, postgresql://USER@HOST:PORT/DB, instead of "
                               "SQLite in --data (default: $FLEETGATE_STORE)")
        verb.add_argument("--data-key", type=Path, metavar="FILE",
                          help="the console's data key (default <data>/data.key; the same "
                               "file on every node of a cluster)")
        verb.add_argument("--log-file", help='JSON log destination ("-" for stderr)')
        # Checked with the config (not argparse `choices`): a wrong value is a configuration
        # error, one line and exit 3, whether it came from the flag or the file.
        verb.add_argument("--log-level", metavar="LEVEL",
                          help="write lines of this level and above: debug, info (default), "
                               "warning or error")
        verb.add_argument("--node", metavar="NAME",
                          help="this node's name in the cluster (default: $FLEETGATE_NODE, "
                               "else <host>-<pid>)")
        verb.add_argument("--workers", type=int, metavar="N",
                          help="run N gateway processes sharing the ports (SO_REUSEPORT), "
                               "named <node>-1..N; needs a PostgreSQL store")
        verb.add_argument("--reuse-port", action="store_const", const=True,
                          help="bind the listeners with SO_REUSEPORT (set by --workers)")
    backup = verbs.add_parser(
        "backup", help="copy the data folder's store, or restore a copy (erasures stay erased)",
        description="create: an online, consistent copy of the store (the gateway may run). "
                    "restore: put a copy back (stop the gateway first) and re-apply every "
                    "erasure recorded after the copy was taken.",
        epilog="examples:\n"
               "  fleet-gateway backup create /backup/2026-12-05 --data /var/lib/fleetgate\n"
               "  fleet-gateway backup restore /backup/2026-12-05 --data /var/lib/fleetgate\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    backup.add_argument("action", choices=("create", "restore"))
    backup.add_argument("folder", type=Path, help="the backup folder (create: new or empty)")
    backup.add_argument("--config", type=Path, help="TOML config file (for data and the ledger)")
    backup.add_argument("--data", type=Path, help="the gateway's data folder")
    backup.add_argument("--erasure-ledger", type=Path,
                        help="the erasure ledger (default <data>/erasures.jsonl)")
    account = verbs.add_parser(
        "account", help="manage console accounts (add-operator bootstraps the first one)",
        description="add-operator: create an operator account in <data>/accounts.db, or "
                    "with --store in the PostgreSQL store (the password from a prompt, or the "
                    "first line of --password-file). rotate-key: encrypt every account under "
                    "a fresh data key (stop the gateway, or every node, first). import: copy "
                    "<data>/accounts.db into the (empty) accounts of the --store.",
        epilog="examples:\n"
               "  fleet-gateway account add-operator alice@example.com --data /var/lib/fleetgate\n"
               "  fleet-gateway account rotate-key --data /var/lib/fleetgate\n"
               "  fleet-gateway account add-operator alice@example.com --store "
               "postgresql://fleetgate@db/fleetgate --data-key /etc/fleetgate/data.key\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    account.add_argument("action", choices=("add-operator", "rotate-key", "import"))
    account.add_argument("email", nargs="?")
    account.add_argument("--config", type=Path, help="TOML config file (data, store, data_key)")
    account.add_argument("--data", type=Path, help="the gateway's data folder")
    account.add_argument("--store", metavar="URL", help="the PostgreSQL store (accounts there; "
                         "default: $FLEETGATE_STORE)")
    account.add_argument("--data-key", type=Path, help="the data key file (default "
                         "<data>/data.key)")
    account.add_argument("--password-file", type=Path, help="file whose first line is it")
    from .audit import add_verb
    add_verb(verbs)
    cluster = verbs.add_parser(
        "cluster", help="the cluster's nodes on a PostgreSQL store",
        description="status: every node's state, heartbeat age, live connections and "
                    "addresses, from the store's node table. Exit 0 when every node is alive, "
                    "12 when one is not (lapsed, dead or recently reaped).",
        epilog="examples:\n"
               "  fleet-gateway cluster status --config /etc/fleetgate/gateway.toml\n"
               "  fleet-gateway cluster status --store postgresql://fleetgate@db/fleetgate "
               "--json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    cluster.add_argument("action", choices=("status",))
    cluster.add_argument("--config", type=Path, help="TOML config file (for the store)")
    cluster.add_argument("--store", metavar="URL", help="the PostgreSQL store's URL")
    cluster.add_argument("--json", action="store_true", help="one JSON document")
    return parser


def _version() -> str:
    try:
        return version("fleetgate")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _config(args: argparse.Namespace) -> GatewayConfig:
    """The configuration `serve` runs with: defaults, the file, the flags, the environment.

    Raises:
        ConfigError: the configuration is unusable.
    """
    config = load_config(
        args.config,
        {
            "ca_home": args.ca_home,
            "cert": args.cert,
            "key": args.key,
            "mqtt": args.mqtt,
            "http": args.http,
            "metrics": args.metrics,
            "data": args.data,
            "store": args.store,
            "data_key": args.data_key,
            "log_file": args.log_file,
            "log_level": args.log_level,
            "node": args.node,
            "workers": args.workers,
            "reuse_port": args.reuse_port,
        },
    )
    if config.node is None and os.environ.get("FLEETGATE_NODE"):
        config = dataclasses.replace(config, node=os.environ["FLEETGATE_NODE"])
        load_config(None, {"node": config.node})  # checks the name
    if config.ca_home is None and os.environ.get("FLEET_CA_HOME"):
        # Like fleet-ca: the flag, then the config file, then the environment.
        config = dataclasses.replace(config, ca_home=Path(os.environ["FLEET_CA_HOME"]))
    if config.store is None and os.environ.get("FLEETGATE_STORE"):
        config = dataclasses.replace(config, store=check_store(os.environ["FLEETGATE_STORE"]))
    if args.http not in (None, "off") and config.data is None and config.store is None:
        raise ConfigError("--http needs --data or --store: the HTTPS API serves the store")
    return config


def _toml(config: GatewayConfig) -> str:
    """Every option as a flat TOML document `load_config` reads back."""
    lines = [f"# fleet-gateway {_version()}: the effective configuration"]
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value is None:
            lines.append(f"# {field.name} = (unset)")
        elif isinstance(value, bool):
            lines.append(f"{field.name} = {'true' if value else 'false'}")
        elif isinstance(value, int | float):
            lines.append(f"{field.name} = {value!r}")
        elif field.name == "store":  # never print a password (it belongs in ~/.pgpass)
            from .storage.postgres.url import redact

            lines.append(f"{field.name} = {json.dumps(redact(value))}")
        else:
            lines.append(f"{field.name} = {json.dumps(str(value))}")
    return "\n".join(lines)


def _backup(args: argparse.Namespace) -> int:
    from .backup import create_backup, restore_backup
    from .storage.errors import StorageError
    from .storage.ledger import ErasureLedger

    try:
        config = load_config(args.config, {"data": args.data,
                                           "erasure_ledger": args.erasure_ledger})
        if config.data is None:
            raise ConfigError("no data folder: pass --data DIR or set data in the config")
        ledger = ErasureLedger(config.erasure_ledger_path)
    except ConfigError as exc:
        print(f"fleet-gateway: error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    try:
        if args.action == "create":
            with _progress_bar("copying the store") as progress:
                manifest = create_backup(config.data, args.folder, progress=progress)
            print(f"backup of {config.data} in {args.folder} "
                  f"(taken at {manifest.taken_at.isoformat()})")
        else:
            with _progress_bar("restoring the store") as progress:
                restored = trio.run(partial(restore_backup, args.folder, config.data, ledger,
                                            progress=progress))
            print(f"restored {config.data} from {args.folder} (taken at "
                  f"{restored.manifest.taken_at.isoformat()}); re-applied "
                  f"{restored.erasures_reapplied} later erasure(s) from {ledger.path}")
    except StorageError as exc:
        print(f"fleet-gateway: error: {exc}", file=sys.stderr)
        return ExitCode.BACKUP
    return ExitCode.OK


@contextlib.contextmanager
def _progress_bar(what: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr when it is a terminal; yields its (done, total) updater."""
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True,
                  disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task(what, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _check_config(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
        TLSContexts(config)  # the files serve would load, loaded the same way
    except ConfigError as exc:
        print(f"fleet-gateway: error: {exc}", file=sys.stderr)
        return _config_exit(exc)
    print(_toml(config))
    return ExitCode.OK


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed its one line already
        return ExitCode.OK if exc.code == 0 else ExitCode.USAGE
    if args.verb == "check-config":
        return _check_config(args)
    if args.verb == "backup":
        return _backup(args)
    if args.verb == "account":
        from .accounts.cli import account_verb
        return account_verb(args)
    if args.verb == "audit":
        from .audit import audit_verb
        return audit_verb(args)
    if args.verb == "cluster":
        return _cluster_status(args)
    from .cluster.nodes import NodeError, default_node_name
    from .cluster.workers import SUPERVISOR_FD_ENV, WorkerFailed, supervise, watch_supervisor

    try:
        config = _config(args)
        if config.workers > 1 and config.store is None:
            raise ConfigError(f"--workers {config.workers} needs a PostgreSQL store (--store "
                              "postgresql://...): a SQLite data folder is locked to one "
                              "process")
        config = dataclasses.replace(config, node=config.node or default_node_name())
        log = open_log(config)
    except ConfigError as exc:
        print(f"fleet-gateway: error: {exc}", file=sys.stderr)
        return _config_exit(exc)
    supervisor_fd = os.environ.pop(SUPERVISOR_FD_ENV, None)

    async def run() -> None:
        if config.workers > 1:
            await supervise(config, (argv if argv is not None else sys.argv[1:])[1:],
                            config.node or "", log)
            return
        async with trio.open_nursery() as nursery:
            if supervisor_fd is not None:  # a worker of `serve --workers`
                async def stop_without_supervisor() -> None:
                    await watch_supervisor(int(supervisor_fd))
                    os.kill(os.getpid(), signal.SIGTERM)  # the clean stop, as from a shell

                nursery.start_soon(stop_without_supervisor)
            await run_gateway(config, log)
            nursery.cancel_scope.cancel()

    try:
        trio.run(run)
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return ExitCode.OK
    except (OSError, GatewayError, WorkerFailed, BaseExceptionGroup) as exc:
        for kind, code in ((StoreUnavailable, ExitCode.STORE_UNAVAILABLE),
                           (FolderInUse, ExitCode.DATA_IN_USE)):
            found = _find(exc, kind)
            if found is not None:
                print(f"fleet-gateway: error: {found}", file=sys.stderr)
                return code
        config_error = _find(exc, ConfigError)
        if config_error is not None:
            print(f"fleet-gateway: error: {config_error}", file=sys.stderr)
            return _config_exit(config_error)
        node_error = _find(exc, NodeError)
        if node_error is not None:
            print(f"fleet-gateway: error: {node_error}", file=sys.stderr)
            return node_error.exit_code
        failed = _find(exc, WorkerFailed)
        if failed is not None:
            print(f"fleet-gateway: error: {failed}", file=sys.stderr)
            return failed.code
        oserror = _find(exc, OSError)
        if oserror is None:
            raise
        where = oserror.filename if isinstance(oserror.filename, str) else config.mqtt
        print(f"fleet-gateway: error: cannot listen on {where}: "
              f"{oserror.strerror or oserror}", file=sys.stderr)
        return ExitCode.LISTEN
    return ExitCode.OK


def _config_exit(exc: ConfigError) -> int:
    """A bad store URL has its own exit code; any other configuration error is 3."""
    return ExitCode.STORE_URL if isinstance(exc, BadStoreURL) else ExitCode.CONFIG


def _cluster_status(args: argparse.Namespace) -> int:
    """`cluster status`: read the node table, print it, exit 12 when a node is not alive."""
    import psycopg

    from .cluster.nodes import read_nodes
    from .cluster.status import ClusterStatus

    try:
        config = load_config(args.config, {"store": args.store})
        if config.store is None and os.environ.get("FLEETGATE_STORE"):
            config = dataclasses.replace(config,
                                         store=check_store(os.environ["FLEETGATE_STORE"]))
        if config.store is None:
            raise ConfigError("cluster status needs a PostgreSQL store: pass --store "
                              "postgresql://... or set store in the config")
    except ConfigError as exc:
        print(f"fleet-gateway: error: {exc}", file=sys.stderr)
        return _config_exit(exc)
    try:
        with psycopg.connect(config.store, autocommit=True, connect_timeout=10) as conn:
            nodes = read_nodes(conn)
    except psycopg.Error as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"fleet-gateway: error: cannot read the cluster from PostgreSQL: {detail}",
              file=sys.stderr)
        return ExitCode.STORE_UNAVAILABLE
    status = ClusterStatus(nodes, datetime.now(UTC), config.node_dead_after)
    if args.json:
        print(json.dumps(status.as_json(), indent=2))
    else:
        print(status.as_text())
    return ExitCode.CLUSTER_UNHEALTHY if status.unhealthy else ExitCode.OK


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
