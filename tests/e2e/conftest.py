"""Fixtures for end-to-end tests: real ``yilian`` processes, killed at teardown whatever happened."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .process import YilianProcess


@pytest.fixture
def yilian_process() -> Iterator[type[YilianProcess]]:
    """A factory of :class:`YilianProcess`; every process it made is killed at teardown."""
    made: list[YilianProcess] = []

    def make(data_dir: Path, **kw) -> YilianProcess:
        process = YilianProcess(data_dir, **kw)
        made.append(process)
        return process

    yield make  # type: ignore[misc]
    for process in made:
        if process.alive():
            process.kill()
