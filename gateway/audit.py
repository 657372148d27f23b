"""Who erased, lifted, commanded or changed what: the gateway's audit trail as a service.

The chain itself (entry shape, hash rule, check) is `gateway.storage.audit`; this module
decides what is recorded and by whom, and holds `fleet-gateway audit show|verify`.

What is recorded (one entry each; docs/security.md, "The audit trails"):
- `erase`: a network erased (HTTP API or console), in the erasure's own transaction, with
  whether it was barred and how many live sessions were closed;
- `control`: a command sent to a value (subject the value UUID; never the command itself);
- every other state change an operator or owner makes through the HTTP API (`bar_lift`)
  or the console (`console.claim`, `console.account.delete`, `console.signup`...), once it
  succeeded (status below 400): refused requests change nothing and are in the log only.
`fleet-gateway account add-operator|rotate-key` record `account.add-operator` and
`account.rotate-key` (`record_offline`). The actor is the operator certificate's name, the
console account as `role:id`, or for the command line the OS user. An entry never holds a
reading, a command value, an email address or an IP address.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from .metrics import Count
from .storage.audit import AuditBroken, AuditEvent, AuditRecord
from .storage.errors import StorageError

# API endpoints whose act records itself (`GatewayHooks`), with more than the request has.
SELF_RECORDED = frozenset({"erase_network", "control_value"})
API_ACTIONS = {"lift_bar": "bar_lift"}
_CONSOLE_SELF_RECORDED = re.compile(r"/(erase|control)$")  # the same acts, from the console
_IDS = re.compile(r"^([0-9a-f]{8}-[0-9a-f-]{27}|[0-9a-f]{16})$")
EXIT_BROKEN = 7  # `fleet-gateway audit verify`: the chain is broken


class AuditTrail:
    """Appends entries through the store's writer. Built once, beside the HTTP API."""

    def __init__(self, store: Any, *, log: Any = None, failures: Count | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store, self.log, self.clock = store, log, clock
        self.failures = failures if failures is not None else Count(
            "audit_failures_total", "audit-trail entries that could not be written")

    def entry(self, actor: str, action: str, subject: str, **details: object) -> AuditRecord:
        """A one-event record stamped now (for an act that commits it itself: erasure)."""
        return AuditRecord(actor, self.clock(), (AuditEvent(action, subject, details),))

    async def record(self, actor: str, action: str, subject: str, *,
                     network: UUID | None = None, **details: object) -> None:
        """Append one entry and wait for its commit (behind `network`'s earlier writes).

        A store that cannot write is logged (`audit_failed`) and counted, never raised: the
        act it records has happened already."""
        try:
            await self.store.append_audit(self.entry(actor, action, subject, **details),
                                          network)
        except StorageError as exc:
            self.failures.inc()
            if self.log is not None:
                self.log.emit("audit_failed", action=action, subject=subject,
                              detail=str(exc))

    async def action(self, fields: dict[str, Any]) -> None:
        """Record one answered HTTP API or console request (`Api.on_action` fields), if it
        changed something and its act does not record itself."""
        found = action_of(fields)
        if found is not None:
            action, subject = found
            await self.record(fields.get("operator") or "anonymous", action, subject,
                              via=fields.get("via", "api"))


def action_of(fields: dict[str, Any]) -> tuple[str, str] | None:
    """(action, subject) of a request worth an entry, else None."""
    if int(fields.get("status", 500)) >= 400:
        return None
    path, target = str(fields.get("path", "")), fields.get("target")
    if fields.get("via") == "console":
        if _CONSOLE_SELF_RECORDED.search(path):
            return None
        parts = [p for p in path.removeprefix("/console/").split("/") if p and not
                 _IDS.match(p)]
        return "console." + ".".join(parts or ["home"]), str(target or fields["operator"])
    endpoint = str(fields.get("action"))
    if endpoint in SELF_RECORDED:
        return None
    return API_ACTIONS.get(endpoint, endpoint), str(target or "")


def _by_os_user(action: str, subject: str, details: dict[str, object]) -> AuditRecord:
    """One entry by the OS user running this process (a command line outside the gateway)."""
    import getpass

    try:
        actor = getpass.getuser()
    except (KeyError, OSError):
        actor = "unknown"
    return AuditRecord(actor, datetime.now(UTC), (AuditEvent(action, subject, details),))


def record_offline(data: Path, action: str, subject: str, **details: object) -> None:
    """Append one entry, by the OS user running this process, to the store in `data` from
    outside the gateway (`fleet-gateway account ...`), creating the store if it is missing;
    safe beside a running gateway (the append takes SQLite's write lock).

    Raises:
        StorageError: the store cannot be opened or written.
    """
    from .storage.sqlite import audit_ops
    from .storage.sqlite.schema import configure_writer, migrate
    from .storage.sqlite.store import DB_NAME, _create_private

    record = _by_os_user(action, subject, details)
    try:
        _create_private(data / DB_NAME)
        conn = sqlite3.connect(data / DB_NAME, isolation_level=None)
        try:
            configure_writer(conn, synchronous="FULL")
            migrate(conn)
            conn.execute("BEGIN IMMEDIATE")
            try:
                audit_ops.append(conn, record)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as exc:
        raise StorageError(f"cannot record in {data / DB_NAME}: {exc}") from None


def record_offline_postgres(url: str, action: str, subject: str, **details: object) -> None:
    """`record_offline` for the PostgreSQL store at `url` (its schema made if missing).

    Raises:
        StorageError: the store cannot be reached, migrated or written.
    """
    import psycopg

    from .storage.postgres import audit_ops
    from .storage.postgres.schema import migrate
    from .storage.postgres.url import redact

    record = _by_os_user(action, subject, details)
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            migrate(conn)
            with conn.transaction():
                audit_ops.append(conn, record)
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise StorageError(f"cannot record in {redact(url)}: {first}") from None


# -- fleet-gateway audit show|verify ---------------------------------------------------------

def add_verb(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "audit", help="list the audit trail, or check its hash chain",
        description="show: the audit trail's entries (erasures, bar lifts, control commands, "
                    "operator and owner actions), oldest first. verify: check the whole hash "
                    f"chain; exit {EXIT_BROKEN} naming the first broken entry. Reads the "
                    "store of the data folder; the gateway may be running.",
        epilog="examples:\n"
               "  fleet-gateway audit show --data /var/lib/fleetgate --since 2026-12-01\n"
               "  fleet-gateway audit verify --data /var/lib/fleetgate\n"
               "  fleet-gateway audit verify --store postgresql://fleetgate@db/fleetgate\n"
               "  fleet-gateway audit show --json --data D | tail -1   # the hash to keep\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("show", "verify"))
    p.add_argument("--config", type=Path, help="TOML config file (for data)")
    p.add_argument("--data", type=Path, help="the gateway's data folder")
    p.add_argument("--store", metavar="URL",
                   help="the PostgreSQL store instead (default: $FLEETGATE_STORE)")
    p.add_argument("--since", type=_since, metavar="YYYY-MM-DD[THH:MM:SSZ]")
    p.add_argument("--json", action="store_true", help="one JSON object per line")


def _since(text: str) -> datetime:
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(f"{text!r} is not YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ")


def audit_verb(args: argparse.Namespace) -> int:
    """Run `fleet-gateway audit ...`; return the exit code (3: no store, 7: broken, 8: a
    malformed store URL, 9: PostgreSQL unreachable)."""
    from .config import check_store, load_config
    from .errors import ConfigError
    from .storage.errors import BadStoreURL
    from .storage.sqlite import audit_ops
    from .storage.sqlite.store import DB_NAME

    try:
        config = load_config(args.config, {"data": args.data, "store": args.store})
        store = config.store
        if store is None and os.environ.get("FLEETGATE_STORE"):
            store = check_store(os.environ["FLEETGATE_STORE"])
        if store is not None:
            return _audit_postgres(args, store)
        if config.data is None:
            raise ConfigError("no data folder: pass --data DIR or set data in the config")
        path = config.data / DB_NAME
        if not path.is_file():
            raise ConfigError(f"no store at {path}")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except (ConfigError, sqlite3.Error) as exc:
        print(f"fleet-gateway: error: {exc}", file=sys.stderr)
        return 8 if isinstance(exc, BadStoreURL) else 3
    return _audit_run(args, audit_ops, conn, sqlite3.Error)


def _audit_postgres(args: argparse.Namespace, url: str) -> int:
    """`audit show|verify` on the PostgreSQL store (a read-only transaction)."""
    import psycopg

    from .storage.postgres import audit_ops

    try:
        conn = psycopg.connect(url, connect_timeout=5)
        conn.read_only = True
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"fleet-gateway: error: cannot reach PostgreSQL: {first}", file=sys.stderr)
        return 9
    return _audit_run(args, audit_ops, conn, psycopg.Error)


def _audit_run(args: argparse.Namespace, audit_ops: Any, conn: Any,
               db_error: type[Exception]) -> int:
    try:
        if args.action == "verify":
            n = audit_ops.verify(conn)
            print(f"audit trail intact: {n} entries")
            return 0
        for e in audit_ops.entries(conn, args.since):
            if args.json:
                line = json.dumps(e.to_json(), sort_keys=True)
            else:
                doc = e.to_json()["details"]
                details = " ".join(f"{k}={v}" for k, v in doc.items() if v is not None)  # type: ignore[union-attr]
                line = f"{e.seq:>6} {e.at} {e.actor} {e.action} {e.subject} {details}"
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
        return 0
    except AuditBroken as exc:
        print(f"fleet-gateway: {exc}", file=sys.stderr)
        return EXIT_BROKEN
    except db_error as exc:  # no audit table yet (a store before schema 4), unreadable
        print(f"fleet-gateway: error: cannot read the audit trail: {exc}", file=sys.stderr)
        return 3
    finally:
        conn.close()
