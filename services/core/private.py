"""Patient data at rest is readable by Yilian's own user only.

Everything under the data directory — the SQLite database and its ``-wal``/``-shm``, blob files
and their folders, journals, quarantine, staging files, secrets — holds patient data or keys.
:func:`restrict_new_files` sets the process umask to 077 at start: every file and directory
created afterwards, by this process or a process it starts (worker, indexer and PDF processes
inherit the umask across ``fork``/``exec``), is owner-only (files 0600, directories 0700),
whatever the library that creates it asks for.  :func:`make_private` also takes group and other
permissions away from what an earlier version left under the data directory.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("yilian.private")

UMASK = 0o077
SHARED_BITS = 0o077  # group and other permissions


def restrict_new_files() -> None:
    os.umask(UMASK)


def make_private(data_dir: Path) -> int:
    """Set the umask, create ``data_dir`` 0700 if missing, and if it was open to other users (a data
    directory an earlier version made), strip group/other permissions from everything under it
    (symbolic links are not followed).  Returns how many modes changed.

    A data directory already 0700 is not walked: nobody else can reach anything below it, and the
    walk costs about a second per 100 000 files at every start."""
    restrict_new_files()
    data_dir.mkdir(parents=True, exist_ok=True)
    if not data_dir.stat().st_mode & SHARED_BITS:
        return 0
    changed = 0
    refused: list[str] = []

    def restrict(path: str) -> None:
        nonlocal changed
        try:
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode) and mode & SHARED_BITS:
                os.chmod(path, stat.S_IMODE(mode) & ~SHARED_BITS)
                changed += 1
        except FileNotFoundError:
            pass  # gone meanwhile (a staging file)
        except PermissionError:  # not ours (e.g. a mount point): say so, still start
            refused.append(path)
    restrict(str(data_dir))  # first: from here on nobody else can even look inside
    for root, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            restrict(os.path.join(root, name))
    if refused:
        log.warning("cannot make these owner-only (not owned by this user); other local users may read them",
                    extra={"data_dir": str(data_dir), "paths": refused[:10], "count": len(refused)})
    if changed:
        log.warning("data directory was readable by other users; made owner-only",
                    extra={"data_dir": str(data_dir), "paths_changed": changed})
    return changed
