"""Helper processes end with their parent: a ``kill -9`` of the parent must leave none behind.

A ``ProcessPoolExecutor`` worker blocks on its call queue and never learns that the process
that fed it is gone, so it would live on as an orphan holding memory (and, for a spawned
interpreter, a few file descriptors) until the machine restarts.
"""

from __future__ import annotations

import os
import threading

PARENT_POLL_SECONDS = 1.0


def exit_with_parent(parent_pid: int, interval: float = PARENT_POLL_SECONDS) -> None:
    """End this process within ``interval`` seconds of ``parent_pid`` ceasing to be its parent.

    For stateless helpers, as a pool's ``initializer``: the exit is immediate (``os._exit``)
    because there is nothing to flush. A process with state of its own polls ``os.getppid()``
    in its main loop and stops cleanly instead.
    """
    def watch() -> None:
        stopped = threading.Event()
        while not stopped.wait(interval):
            if os.getppid() != parent_pid:
                os._exit(0)
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
