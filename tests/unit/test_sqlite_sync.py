"""SqliteStore.sync() keeps SQLite's own locks: another process closing its connection must not
take the WAL away from under this one (closing any descriptor of a file drops the process's
POSIX locks on it, so sync() never opens the database files itself)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

from services.core.events import registry
from services.core.store.port import Batch
from services.core.store.sqlite import SqliteStore


async def test_writes_after_sync_stay_visible_to_other_processes(tmp_path):
    path = tmp_path / "y.db"
    store = SqliteStore(f"sqlite:///{path}", validate=registry().validate)
    await store.open()
    try:
        await store.apply([], lambda _: Batch(puts=[("studies", {"id": "a", "n": 1})]), durable=False)
        await store.sync()
        # Another process opens and closes a connection: were it the last one, it would checkpoint
        # and delete the WAL this process still writes to.
        subprocess.run([sys.executable, "-c", f"import sqlite3; sqlite3.connect({str(path)!r}).execute("
                        "'SELECT count(*) FROM sqlite_master').fetchall()"], check=True)
        await store.apply([], lambda _: Batch(puts=[("studies", {"id": "b", "n": 2})]), durable=False)
        other = sqlite3.connect(path)
        try:
            assert other.execute('SELECT count(*) FROM "c_studies"').fetchone()[0] == 2
        finally:
            other.close()
    finally:
        await store.close()
