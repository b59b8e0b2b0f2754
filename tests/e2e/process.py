"""``yilian up`` as a real subprocess: start, wait for its ready line, stop or kill it."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ..support import stable_port


# The PDF font's common-characters subset (~2 s of CPU in a process of its own at the first start of a
# data directory), built once for every process of the session (tests/conftest.py sets it).
FONT_CACHE: Path | None = None


def yilian_command() -> list[str]:
    """The installed ``yilian`` script next to this interpreter, else ``python -m services.cli``."""
    script = shutil.which("yilian", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "services.cli"]


def clean_env(**overrides: str) -> dict[str, str]:
    """The test's environment without inherited ``YILIAN_*`` settings, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("YILIAN_")}
    env.update(overrides)
    return env


class YilianProcess:
    """One ``yilian`` process with its data dir; ports are chosen once and kept across restarts."""

    def __init__(self, data_dir: Path, *, args: tuple[str, ...] = ("up",), command: list[str] | None = None,
                 **env: str) -> None:
        self.data_dir = data_dir
        self.args = args
        self.command = command or yilian_command()  # another launcher of `yilian up` (make run)
        self.http_port = int(env.pop("YILIAN_HTTP_PORT", 0) or stable_port())  # the same after a restart
        self.dicom_port = int(env.pop("YILIAN_DICOM_PORT", 0) or stable_port())
        self.env = clean_env(YILIAN_DATA_DIR=str(data_dir), YILIAN_HTTP_PORT=str(self.http_port),
                             YILIAN_DICOM_PORT=str(self.dicom_port), YILIAN_BIND_HOST="127.0.0.1",
                             **{"YILIAN_JWT_SECRET": "test-secret-not-for-production",
                                **({"YILIAN_DELIVERY_FONT_CACHE": str(FONT_CACHE)} if FONT_CACHE else {}), **env})
        self.proc: subprocess.Popen[str] | None = None
        self.ready: dict | None = None
        self.runs = 0
        self._lines: queue.Queue[str | None] = queue.Queue()

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}-{'-'.join(self.args)}-run{self.runs}.log"

    def start(self, *, timeout: float = 30.0) -> dict:
        """Start and wait for the ``{"ready": true, ...}`` line; returns it."""
        self.runs += 1
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lines = queue.Queue()
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()/kill()
        # A process group of its own, as a shell gives a command: signal_group() reaches all of it.
        self.proc = subprocess.Popen([*self.command, *self.args], env=self.env, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, bufsize=1, start_new_session=True)
        threading.Thread(target=self._pump, args=(self.proc, self._lines), daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                pytest.fail(f"yilian not ready after {timeout}s; log:\n{self.log_tail()}")
            if line is None:
                pytest.fail(f"yilian exited with {self.proc.wait()} before ready; log:\n{self.log_tail()}")
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message.get("ready"):
                self.ready = message
                return message

    @staticmethod
    def _pump(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def http(self, path: str, *, timeout: float = 5.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def terminate(self, *, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit status (fails the test if it does not stop in time)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"yilian did not stop within {timeout}s of SIGTERM; log:\n{self.log_tail()}")
        finally:
            self.log.close()

    def signal_group(self, sig: int, *, timeout: float = 15.0) -> int:
        """Send ``sig`` to the whole process group, as a terminal's Ctrl-C (SIGINT) or systemd's stop
        (SIGTERM) does, and wait; returns the exit status."""
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"yilian did not stop within {timeout}s of {signal.Signals(sig).name}; log:\n{self.log_tail()}")
        finally:
            self.log.close()

    def stdout_after_ready(self) -> str:
        """What the process printed after its ready line (call once it has exited)."""
        lines = []
        while (line := self._lines.get(timeout=5)) is not None:
            lines.append(line)
        return "".join(lines)

    def kill(self) -> None:
        """``kill -9``: no chance to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if not self.log.closed:
            self.log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def children(self) -> list[int]:
        """The processes this one started (indexer, PDF worker, ...), while it runs."""
        assert self.proc is not None
        return [pid for pid, parent in _processes() if parent == self.proc.pid]


def running(pid: int) -> bool:
    """``pid`` exists and has not exited (a zombie nobody reaped yet counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _processes() -> list[tuple[int, int]]:
    """(pid, parent pid) of every process on the machine, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    found.append((int(entry), int(f.read().rsplit(")", 1)[1].split()[1])))
            except (OSError, IndexError, ValueError):
                continue  # it exited while we looked
    return found
