"""Helper processes end with their parent: a ``kill -9`` of the parent must leave none behind.

Nothing tells a child that its parent died (it is re-parented and carries on): a
``ProcessPoolExecutor`` worker blocks on its call queue, a gateway worker keeps its share
of the listening port. So each helper watches its parent pid from a daemon thread.

Nor do they stop on their own at Ctrl-C: they are started with SIGINT blocked
(:func:`spared_from_interrupt`) and their parent stops them in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing import resource_tracker

log = logging.getLogger("yilian.orphans")

PARENT_POLL_SECONDS = 1.0


def on_parent_exit(parent_pid: int, act: Callable[[], object], interval: float = PARENT_POLL_SECONDS) -> None:
    """Call ``act`` (from a daemon thread) within ``interval`` seconds of ``parent_pid``
    ceasing to be this process's parent."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        act()
    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def exit_with_parent(parent_pid: int) -> None:
    """For a stateless helper (a pool's ``initializer``): exit at once, there is nothing to flush."""
    on_parent_exit(parent_pid, lambda: os._exit(0))


def stop_on_sigterm(stop: asyncio.Event) -> None:
    """Set ``stop`` at the first SIGTERM and ignore the ones after it.

    A stop of the whole process group (systemd's, a terminal's) reaches a helper twice: from the
    group, and from its parent stopping it in order.  A second SIGTERM arriving while asyncio
    closes its loop finds the wake-up pipe already closed, and Python prints "Exception ignored
    ... Bad file descriptor" on a clean stop.  The helper is stopping anyway; its parent still
    kills it if it does not end in time."""
    loop = asyncio.get_running_loop()

    def first() -> None:
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, first)


def stop_with_parent(parent_pid: int, stop: asyncio.Event, what: str) -> None:
    """For a helper with state (``what``, for the log): set ``stop`` on its event loop, so
    that it stops cleanly."""
    def gone() -> None:
        log.warning("parent process is gone; stopping", extra={"helper": what, "parent_pid": parent_pid})
        stop.set()
    loop = asyncio.get_running_loop()

    def act() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: it stopped already
            loop.call_soon_threadsafe(gone)
    on_parent_exit(parent_pid, act)


@contextlib.contextmanager
def spared_from_interrupt() -> Iterator[None]:
    """Start helper processes inside this block: they inherit SIGINT blocked, from their first
    instruction on (a spawned child imports for a second or two before any of our code runs).

    A terminal sends Ctrl-C to the whole process group; a helper would die of it with a
    KeyboardInterrupt traceback while its parent is still stopping it in order. A SIGINT
    meant for the parent during the block stays pending and is delivered at its end.
    """
    # Starting multiprocessing's resource tracker (done by the first spawn) unblocks SIGINT:
    # start it before blocking.
    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
