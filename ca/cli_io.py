"""`fleet-ca`'s I/O helpers: where the home is, passphrases, stdout, input files.

Split from `ca.cli` so that the command table stays readable; nothing here parses arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import BadInputError, PassphraseError
from .inventory import serial_hex
from .store import CAHome, SignedCert

ENV_HOME = "FLEET_CA_HOME"
ENV_PASSPHRASE = "FLEET_CA_PASSPHRASE"
ENV_ROOT_PASSPHRASE = "FLEET_CA_ROOT_PASSPHRASE"


# -- helpers -------------------------------------------------------------------------------

def _home_path(args: argparse.Namespace) -> Path:
    return Path(args.home or os.environ.get(ENV_HOME) or "certs")


def _read_passphrase(args: argparse.Namespace, *, confirm: bool = False,
                     file_attr: str = "passphrase_file", env: str = ENV_PASSPHRASE,
                     prompt: str = "CA passphrase: ") -> bytes:
    """--passphrase-file, else $FLEET_CA_PASSPHRASE, else a prompt on a TTY (or the root's
    own file, variable and prompt)."""
    f: Path | None = getattr(args, file_attr, None)
    if f is not None:
        try:
            data = f.read_bytes()
        except OSError as exc:
            raise PassphraseError(f"cannot read passphrase file {f}: {exc.strerror}") from None
        data = data.rstrip(b"\r\n")
        if not data:
            raise PassphraseError(f"passphrase file {f} is empty")
        return data
    value = os.environ.get(env)
    if value:
        return value.encode()
    if sys.stdin is not None and sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if not first:
            raise PassphraseError("the passphrase is empty")
        if confirm and getpass.getpass("again: ") != first:
            raise PassphraseError("the two passphrases differ")
        return first.encode()
    hint = " (or --no-passphrase for a dev CA)" if confirm else ""
    raise PassphraseError(
        f"no passphrase: give --{file_attr.replace('_', '-')} F or set {env}{hint}"
    )


def _open(args: argparse.Namespace, *, sign: bool) -> CAHome:
    """Open the home; with `sign`, load the issuing key now (asking for the passphrase)."""
    home = CAHome.open(_home_path(args))
    if sign:
        try:
            _unlock(home, args)
        except BaseException:
            home.close()
            raise
    return home


def _unlock(home: CAHome, args: argparse.Namespace) -> None:
    if home.key_encrypted:
        home.unlock(_read_passphrase(args))
    else:
        _ = home.issuer


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@contextlib.contextmanager
def _progress(total: int, what: str) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr (rich) while the block runs, only when stderr is a terminal;
    yields the callback taking the count done so far (None: no bar)."""
    if total < 2 or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(what, total=total)
        yield lambda done: bar.update(task, completed=done)


def _read_input(path: str | Path, what: str, limit: int = 1 << 20) -> bytes:
    if str(path) == "-":
        return sys.stdin.buffer.read(limit + 1)
    try:
        with open(path, "rb") as f:
            return f.read(limit + 1)
    except OSError as exc:
        raise BadInputError(f"cannot read {what} {path}: {exc.strerror}") from None


def _print_signed(signed: SignedCert, out: Path | None) -> None:
    if out is None:
        _write_stdout(signed.chain_pem.decode())
    print(f"issued device {signed.network_uuid} serial {serial_hex(signed.serial)}"
          + (f" -> {out}" if out else ""), file=sys.stderr)
