"""The systems under test, each started fresh on free loopback ports: Yilian, Orthanc, DCMTK storescp."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
STORESCP = "/usr/bin/storescp"
STORESCU = "/usr/bin/storescu"
ORTHANC = "/usr/sbin/Orthanc"
# TCP_NODELAY=1 for both ends when timing (DCMTK reads it from the environment).
ENV = {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Peer:
    name: str
    port: int
    ae_title: str
    count: Callable[[], int]  # instances it holds now
    pid: int = 0  # the server process (its children count too) for peak memory


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of ``pid`` plus its child processes, in MB (Linux)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total / 1024


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def storescp(workdir: Path, *, fork: bool = False) -> Iterator[Peer]:
    out = workdir / "storescp"
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [STORESCP, "-od", str(out), "-aet", "STORESCP", *(["--fork"] if fork else []), str(port)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: _listening(port), 10, "storescp", proc)
        yield Peer("dcmtk-storescp", port, "STORESCP", lambda: sum(1 for _ in out.iterdir()), proc.pid)
    finally:
        _stop(proc)


@contextmanager
def orthanc(workdir: Path) -> Iterator[Peer]:
    base = workdir / "orthanc"
    base.mkdir(parents=True, exist_ok=True)
    port, http = free_port(), free_port()
    config = {
        "Name": "bench", "StorageDirectory": str(base / "db"), "IndexDirectory": str(base / "db"),
        "DicomAet": "ORTHANC", "DicomPort": port, "HttpPort": http, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "StorageCompression": False,
        "Plugins": [], "DicomAlwaysAllowStore": True, "HttpServerEnabled": True,
    }
    (base / "orthanc.json").write_text(json.dumps(config))
    proc = subprocess.Popen([ORTHANC, str(base / "orthanc.json")], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def count() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/statistics", timeout=10) as r:
            return json.load(r)["CountInstances"]
    try:
        _wait(lambda: _listening(port) and _listening(http), 30, "Orthanc", proc)
        yield Peer("orthanc", port, "ORTHANC", count, proc.pid)
    finally:
        _stop(proc)


@contextmanager
def yilian(workdir: Path, *, workers: int = 1, native: bool = True, everything: bool = False,
           indexer: str = "auto") -> Iterator[Peer]:
    """The gateway process (``yilian serve pacs_gateway``), or with ``everything`` all services (``yilian up``);
    ``indexer``: YILIAN_GATEWAY_INDEXER (auto, the default, is an indexer process on 2 cores or more)."""
    data = workdir / "yilian"
    port, http = free_port(), free_port()
    env = {**ENV, "YILIAN_DATA_DIR": str(data), "YILIAN_DICOM_PORT": str(port), "YILIAN_HTTP_PORT": str(http),
           "YILIAN_GATEWAY_WORKERS": str(workers), "YILIAN_LOG_LEVEL": "WARNING",
           "YILIAN_BIND_HOST": "127.0.0.1", "YILIAN_DICOM_NATIVE_UL": "true" if native else "false",
           "YILIAN_GATEWAY_INDEXER": indexer}
    log = open(workdir / "yilian.log", "w")
    command = ["up"] if everything else ["serve", "pacs_gateway"]
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", *command], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=log, text=True)

    def count() -> int:
        db = sqlite3.connect(f"file:{data / 'yilian.db'}?mode=ro", uri=True)
        try:
            return db.execute('SELECT count(*) FROM "c_instances"').fetchone()[0]
        finally:
            db.close()
    try:
        line = proc.stdout.readline()  # the ready line
        if not line.startswith("{"):
            raise RuntimeError(f"yilian did not start: {line!r}; see {workdir / 'yilian.log'}")
        _wait(lambda: _listening(port), 30, "Yilian gateway", proc)
        yield Peer(f"yilian{'' if workers == 1 else f' ({workers} workers)'}", port, "YILIAN", count, proc.pid)
    finally:
        _stop(proc)
        log.close()
