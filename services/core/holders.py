"""Who holds a lease, so that another process on the same data directory can tell it is gone.

A lease (``core/claims.py``) names its holder: ``node:pid:instance``, the instance being new at
every start.  While the process lives it holds an exclusive ``flock`` on
``<data dir>/holders/<instance>.lock``; the kernel drops that lock when the process ends, even
by ``kill -9``.  So a process sharing the data directory — the restarted ``yilian up``, a second
``yilian serve`` on the same host — can take a dead holder's claims at once instead of waiting
for their leases to run out: the lock is free only if the holder is gone, and a new start is a
new instance, so a reused pid cannot pass for the old holder.  A holder with no file here (a
process on another host, over a shared MongoDB) is unknown and its leases expire as before.

The file is created under a temporary name, locked, then renamed into place: a lock file that
is seen is always locked while its holder lives.  A gone holder's file is removed an hour after
it was first found free (its leases are long expired by then); a clean stop leaves it too, so
whatever that process was still working on is taken at the next start without waiting.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("yilian.holders")

KEY = "core.holder"
FORGET_SECONDS = 3600.0


class Holder:
    """This process as a holder of leases in ``directory`` (``<data dir>/holders``)."""

    def __init__(self, directory: Path, *, forget_seconds: float = FORGET_SECONDS) -> None:
        self.directory = directory
        self.instance = uuid.uuid4().hex[:12]
        self.id = f"{os.uname().nodename}:{os.getpid()}:{self.instance}"
        self.forget_seconds = forget_seconds
        self._fd: int | None = None
        self._free_since: dict[str, float] = {}  # lock file name -> when first found free

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.directory / f".{self.instance}.new"
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, self.id.encode())
        os.rename(temporary, self.directory / f"{self.instance}.lock")
        self._fd = fd

    async def stop(self) -> None:
        """Release the lock (the file stays: see the module's docstring)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def gone(self) -> set[str]:
        """The ids of this directory's holders whose process has ended."""
        found: set[str] = set()
        now = time.monotonic()
        try:
            names = [p for p in os.listdir(self.directory) if p.endswith(".lock")]
        except FileNotFoundError:
            return found
        for name in names:
            if name == f"{self.instance}.lock":
                continue
            holder = self._free(name, now)
            if holder is not None:
                found.add(holder)
        return found

    def _free(self, name: str, now: float) -> str | None:
        """The holder id in lock file ``name`` if nobody holds its lock, else None."""
        path = self.directory / name
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._free_since.pop(name, None)
                return None  # its holder lives (or another process is looking at it right now)
            holder = os.pread(fd, 512, 0).decode(errors="replace")
            since = self._free_since.setdefault(name, now)
            if now - since >= self.forget_seconds:
                path.unlink(missing_ok=True)  # under the lock: nobody takes it over meanwhile
                self._free_since.pop(name, None)
            return holder or None
        finally:
            os.close(fd)


def of(rt: Runtime) -> Holder:
    """The process's holder (one per runtime, in ``<data dir>/holders``), opened at first use."""
    holder = rt.shared.get(KEY)
    if holder is None:
        holder = rt.shared[KEY] = Holder(rt.settings.data_dir / "holders")
        holder.open()
        rt._background.append(holder)
        log.info("lease holder", extra={"holder": holder.id})
    return holder
