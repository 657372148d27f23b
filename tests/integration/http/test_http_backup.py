"""Backups that keep erasures erased: a network erased after a backup was taken stays erased
when that backup is restored (every table scanned), and the other networks come back."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio
from httphelpers import seed_network, start_env
from test_http_erasure import _network_ids, _rows_of

from gateway.backup import create_backup
from gateway.storage import DB_NAME, open_sqlite_store
from gateway.storage.errors import StorageError
from gateway.storage.ledger import LEDGER_FILE, ErasureLedger

EXE = shutil.which("fleet-gateway", path=str(Path(sys.executable).parent)) or "fleet-gateway"


def _gateway(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=120)


async def test_a_restored_backup_keeps_a_later_erasure_erased(ca_home, tmp_path):
    data, backup = tmp_path / "data", tmp_path / "backup"
    kept, erased = uuid.uuid4(), uuid.uuid4()
    async with open_sqlite_store(data) as store:
        async with trio.open_nursery() as nursery:
            env = await start_env(ca_home, data, nursery, store)
            await seed_network(env.ingest, kept, reports=5)
            await seed_network(env.ingest, erased, reports=5)
            # Online: the gateway keeps running while the copy is taken.
            await trio.to_thread.run_sync(create_backup, data, backup)
            answer = await env.operator().request("DELETE", f"/api/v1/networks/{erased}")
            assert answer.status == 200, answer.body
            nursery.cancel_scope.cancel()
    with sqlite3.connect(backup / DB_NAME) as db:
        ids, uuids = _network_ids(db, erased)  # the backup still holds it
        assert sum(_rows_of(db, ids, uuids).values()) > 0
    assert (backup / DB_NAME).stat().st_mode & 0o777 == 0o600

    result = _gateway("backup", "restore", str(backup), "--data", str(data))
    assert result.returncode == 0, result.stderr
    assert "re-applied 1 later erasure(s)" in result.stdout
    with sqlite3.connect(data / DB_NAME) as db:
        assert _rows_of(db, ids, uuids) == dict.fromkeys(_rows_of(db, ids, uuids), 0)
        assert db.execute("SELECT count(*) FROM networks WHERE uuid = ?",
                          (str(kept),)).fetchone() == (1,)
        # The restored audit trail ends at the backup, then records the restore and the
        # erasure it re-applied; the chain still verifies.
        trail = db.execute("SELECT actor, action, subject FROM audit ORDER BY seq").fetchall()
    assert trail == [("restore", "restore", trail[0][2]), ("restore", "erase", str(erased))]
    assert _gateway("audit", "verify", "--data", str(data)).returncode == 0


async def test_an_erasure_before_the_backup_is_not_applied_again(tmp_path):
    ledger = ErasureLedger(tmp_path / LEDGER_FILE)
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    old, new = uuid.uuid4(), uuid.uuid4()
    ledger.record(old, t0)
    ledger.record(new, t0 + timedelta(hours=2))
    assert [e.network for e in ledger.since(t0 + timedelta(hours=1))] == [new]
    assert (tmp_path / LEDGER_FILE).stat().st_mode & 0o777 == 0o600


def test_a_damaged_ledger_stops_a_restore_before_anything_changes(tmp_path):
    (tmp_path / LEDGER_FILE).write_text('{"network": "not-a-uuid", "at": "2026-12-01"}\n')
    with pytest.raises(StorageError, match="line 1 is damaged"):
        ErasureLedger(tmp_path / LEDGER_FILE).since(datetime(2026, 1, 1, tzinfo=UTC))


def test_backup_errors_are_one_line_and_exit_5(tmp_path):
    result = _gateway("backup", "create", str(tmp_path / "b"), "--data", str(tmp_path / "none"))
    assert result.returncode == 5 and "no store in" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = _gateway("backup", "restore", str(tmp_path), "--data", str(tmp_path / "d"))
    assert result.returncode == 5 and "is not a fleetgate backup" in result.stderr
    assert not (tmp_path / "d" / DB_NAME).exists()
    result = _gateway("backup", "create", str(tmp_path / "b"))
    assert result.returncode == 3 and "no data folder" in result.stderr
