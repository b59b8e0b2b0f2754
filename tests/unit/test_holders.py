"""A lease holder is known gone as soon as its process ends, even by ``kill -9``, and only then."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap

from services.core.holders import Holder

from ..support import ROOT

HOLDER = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from services.core.holders import Holder

    holder = Holder(Path(sys.argv[1]))
    holder.open()
    print(holder.id, flush=True)
    time.sleep(600)
''')


async def _start_holder(tmp_path, directory) -> tuple[asyncio.subprocess.Process, str]:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script), str(directory),
                                                stdout=asyncio.subprocess.PIPE,
                                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    return proc, (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()


async def test_a_holder_killed_with_kill_9_is_gone_a_live_one_is_not(tmp_path):
    directory = tmp_path / "holders"
    me = Holder(directory)
    me.open()
    other, other_id = await _start_holder(tmp_path, directory)
    try:
        assert other_id.split(":")[1] == str(other.pid) and other_id != me.id
        assert me.gone() == set()  # alive: its lock is held
        other.send_signal(signal.SIGKILL)
        await other.wait()
        assert me.gone() == {other_id}  # the kernel released its lock
        assert me.gone() == {other_id}  # and it stays known until forgotten
    finally:
        if other.returncode is None:
            other.kill()
            await other.wait()
    await me.stop()
    successor = Holder(directory)
    successor.open()
    assert successor.gone() == {other_id, me.id}  # a clean stop leaves its holder known gone too


def test_a_gone_holder_is_forgotten_after_a_while(tmp_path):
    directory = tmp_path / "holders"
    first = Holder(directory)
    first.open()
    asyncio.run(first.stop())
    second = Holder(directory, forget_seconds=0)
    second.open()
    assert second.gone() == {first.id}  # found free: reported, then its file removed
    assert second.gone() == set()
    assert sorted(p.name for p in directory.iterdir()) == [f"{second.instance}.lock"]
