"""`backup create` and `backup restore` report their progress (the CLI draws it on a TTY)."""

from __future__ import annotations

import sqlite3

from gateway.backup import PAGES_PER_STEP, create_backup, restore_backup
from gateway.storage import DB_NAME, open_sqlite_store
from gateway.storage.ledger import ErasureLedger


async def test_copy_and_restore_report_pages_done_until_all_are(tmp_path):
    data = tmp_path / "data"
    async with open_sqlite_store(data):
        pass
    with sqlite3.connect(data / DB_NAME) as db:  # a store bigger than three copy steps
        db.execute("CREATE TABLE ballast (b BLOB)")
        db.executemany("INSERT INTO ballast VALUES (randomblob(4000))",
                       [()] * (3 * PAGES_PER_STEP))
    created: list[tuple[int, int]] = []
    create_backup(data, tmp_path / "backup", progress=lambda *p: created.append(p))
    restored: list[tuple[int, int]] = []
    await restore_backup(tmp_path / "backup", data, ErasureLedger(tmp_path / "ledger.jsonl"),
                         progress=lambda *p: restored.append(p))
    for steps in (created, restored):
        assert len(steps) >= 3
        assert [done for done, _ in steps] == sorted(done for done, _ in steps)
        assert steps[-1][0] == steps[-1][1] > 3 * PAGES_PER_STEP
    with sqlite3.connect(data / DB_NAME) as db:
        assert db.execute("SELECT count(*) FROM ballast").fetchone() == (3 * PAGES_PER_STEP,)
