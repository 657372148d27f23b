"""A throwaway PostgreSQL server in a folder, for tests, the cluster demo and benchmarks.

`LocalPostgres(folder).start()` runs Debian's `initdb` and `pg_ctl` (PostgreSQL 13 or later
under /usr/lib/postgresql) and serves on a unix socket inside the folder only: no TCP port,
so nothing but this machine's processes can reach it and no port can collide. PostgreSQL
refuses to run as root, so as root the server runs as the unprivileged `postgres` system user
(Debian's package creates it) and the folder is handed to that user. Authentication is
`trust` on that socket: fit for a disposable server, never for a real one.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

UNPRIVILEGED_USER = "postgres"


class LocalPostgresError(Exception):
    """The local server could not be set up or started (message says why)."""


def find_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb, or None."""
    root = Path("/usr/lib/postgresql")
    versions = sorted((p for p in root.glob("*/bin") if (p / "initdb").exists()),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return versions[-1] if versions else None


class LocalPostgres:
    """One disposable PostgreSQL cluster living in `folder` (created if missing)."""

    def __init__(self, folder: Path, *, port: int = 5432, bin_dir: Path | None = None) -> None:
        self.folder = Path(folder)
        self.port = port  # names the socket file only; no TCP listener
        self.bin_dir = bin_dir or find_bin_dir()
        self.data = self.folder / "data"
        self.socket_dir = self.folder / "socket"
        self._user = UNPRIVILEGED_USER if os.geteuid() == 0 else None

    def _run(self, *args: str) -> None:
        if self.bin_dir is None:
            raise LocalPostgresError("PostgreSQL is not installed (Debian package postgresql)")
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self._user:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise LocalPostgresError(f"{args[0]} failed: {done.stderr.strip() or done.stdout}")

    def start(self) -> LocalPostgres:
        """Create the cluster if the folder has none, then start it; returns self."""
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self._user:
            try:
                entry = pwd.getpwnam(self._user)
            except KeyError:
                raise LocalPostgresError(
                    f"running as root needs the unprivileged user {self._user!r} "
                    "(Debian package postgresql creates it)") from None
            for path in (self.folder, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                      "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        options = (f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}' "
                   f"-p {self.port} -c fsync=on -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"),
                  "-o", options, "-w", "start")
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown); a server that is not running is fine."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """A libpq URL for `database` on this server's socket."""
        return (f"postgresql://postgres@/{database}?host={quote(str(self.socket_dir))}"
                f"&port={self.port}")

    def create_database(self, name: str) -> str:
        """Create an empty database `name` and return its URL."""
        import psycopg  # only the callers that use PostgreSQL need it installed

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
