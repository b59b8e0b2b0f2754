"""Helpers for tests: free ports and waiting on conditions (never sleep-and-hope)."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CONSORTIUM = ROOT / "deploy" / "consortium.example.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stable_port() -> int:
    """A free port below the ephemeral range, for a server a test stops and starts again on the
    same port. While it is down, a client retrying a connection to an ephemeral port can be
    given that very port as its own source port and connect to itself (TCP simultaneous open),
    holding the port against the server's return; below the range no client is ever given it."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(max(1024, low - 20000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


async def wait_for(condition: Callable[[], Awaitable[bool] | bool], *, timeout: float = 10.0,
                   interval: float = 0.02, what: str = "condition") -> None:
    """Poll ``condition`` until true; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def wait_for_sync(condition: Callable[[], bool], *, timeout: float = 10.0, interval: float = 0.05,
                  what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class ManualClock:
    """A clock tests move by hand: ``clock()`` reads it, ``clock.advance(s)`` or ``clock.now = t`` moves it."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
