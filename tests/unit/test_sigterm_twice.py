"""A helper process stopped by its process group and then by its parent gets SIGTERM twice; the
second one, arriving while or after asyncio closes its loop, must not kill it or print a traceback
(the README walk's clean-stop test saw "Exception ignored ... Bad file descriptor")."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

CHILD = """
import asyncio, sys, time
from services.core import orphans

async def main():
    stop = asyncio.Event()
    orphans.stop_on_sigterm(stop)
    print("ready", flush=True)
    await stop.wait()

asyncio.run(main())
print("closed", flush=True)
time.sleep(1.0)  # the parent's own SIGTERM arrives now
print("done", flush=True)
"""


def test_a_second_sigterm_after_the_first_is_ignored():
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)  # the group's
        assert proc.stdout.readline().strip() == "closed"
        proc.send_signal(signal.SIGTERM)  # the parent's, after the loop closed
        time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and out.strip() == "done", (proc.returncode, out, err)
    assert "Traceback" not in err and "Exception ignored" not in err, err
