"""Helper processes end with their parent, also when it is killed with ``kill -9``."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap

from ..e2e.process import running
from ..support import ROOT, wait_for

PARENT = textwrap.dedent('''
    import asyncio, multiprocessing, os, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from services.core import orphans

    def stateful(parent_pid, path):
        async def main():
            stop = asyncio.Event()
            orphans.stop_with_parent(parent_pid, stop, "test helper")
            await stop.wait()
            with open(path, "w") as f:
                f.write("stopped cleanly")
        asyncio.run(main())

    if __name__ == "__main__":
        spawn = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(1, mp_context=spawn, initializer=orphans.exit_with_parent,
                                   initargs=(os.getpid(),))
        pool_pid = pool.submit(os.getpid).result()
        helper = spawn.Process(target=stateful, args=(os.getpid(), sys.argv[1]))
        helper.start()
        print(pool_pid, helper.pid, flush=True)
        time.sleep(600)
''')


async def test_a_pool_worker_exits_and_a_stateful_helper_stops_cleanly_after_kill_9_of_the_parent(tmp_path):
    script, said = tmp_path / "parent.py", tmp_path / "helper-said"
    script.write_text(PARENT)
    parent = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(said), stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert parent.stdout is not None
        helpers = [int(pid) for pid in (await asyncio.wait_for(parent.stdout.readline(), 30)).split()]
        assert len(helpers) == 2 and all(map(running, helpers))
    finally:
        parent.send_signal(signal.SIGKILL)
        await parent.wait()
    await wait_for(lambda: not any(map(running, helpers)), timeout=10, what="both helpers end")
    assert said.read_text() == "stopped cleanly"


def _blocked_signals(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("SigBlk:")).split()[1], 16)


def test_a_helper_started_spared_from_interrupt_has_sigint_blocked_from_its_start_and_the_parent_keeps_its_own():
    # Whether or not multiprocessing's resource tracker runs yet (starting it unblocks SIGINT).
    import multiprocessing

    from services.core import orphans
    sigint = 1 << (signal.SIGINT - 1)
    before = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    helper = multiprocessing.get_context("spawn").Process(target=signal.pause, daemon=True)
    with orphans.spared_from_interrupt():
        helper.start()
    try:
        assert _blocked_signals(helper.pid) & sigint  # a terminal's Ctrl-C cannot interrupt its imports
        assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == before  # the parent's Ctrl-C works again
    finally:
        helper.kill()
        helper.join(10)
