"""Patient data at rest is the yilian user's alone: ``yilian up`` (a real subprocess, with its indexer
process writing the blobs) leaves nothing under the data directory that another local user can read,
and fixes what an earlier version left readable."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from pathlib import Path

from ..dicom_samples import STORESCU, make_study
from ..support import wait_for


def shared(data_dir: Path) -> list[str]:
    """Everything under ``data_dir`` (itself included) with any group or other permission."""
    found = []
    for path in [data_dir, *data_dir.rglob("*")]:
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue
        if not stat.S_ISLNK(mode) and mode & 0o077:
            found.append(f"{oct(stat.S_IMODE(mode))} {path.relative_to(data_dir.parent)}")
    return found


def indexed(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute('SELECT count(*) FROM "c_instances"').fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


async def test_the_data_directory_is_owner_only(tmp_path, yilian_process):
    data_dir = tmp_path / "data"
    # What an earlier version left: world-readable folders and files.
    leftover = data_dir / "blobs" / "1.2.3" / "1.2.3.4"
    leftover.mkdir(parents=True)
    (leftover / "old.dcm").write_bytes(b"patient")
    for path in (data_dir, data_dir / "blobs", data_dir / "blobs" / "1.2.3", leftover):
        path.chmod(0o755)
    (leftover / "old.dcm").chmod(0o644)
    old_umask = os.umask(0o022)  # the usual umask, whatever the test runner has
    try:
        yl = yilian_process(data_dir, YILIAN_GATEWAY_INDEXER="process")
        ready = yl.start()
    finally:
        os.umask(old_umask)
    study = make_study(tmp_path / "study", series=2, instances=2)
    proc = await asyncio.create_subprocess_exec(
        STORESCU, "-aet", "CG_CT1", "-aec", "YILIAN", "127.0.0.1", str(ready["dicom_port"]), *map(str, study.files),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, output.decode()
    await wait_for(lambda: indexed(data_dir / "yilian.db") == len(study.files), timeout=20,
                   what="the instances indexed by the indexer process")
    blobs = [p for p in (data_dir / "blobs").rglob("*.dcm") if p.name != "old.dcm" and ".staging" not in p.parts]
    assert len(blobs) == len(study.files)
    assert (data_dir / "yilian.db-wal").exists() and (data_dir / "journal").is_dir()
    assert shared(data_dir) == [], "readable by other users while running"
    assert yl.terminate() == 0
    assert shared(data_dir) == [], "readable by other users after a stop"
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((leftover / "old.dcm").stat().st_mode) == 0o600
