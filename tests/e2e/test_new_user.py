"""What a new user does first, for real: ``make run`` (with his own consortium)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ..support import EXAMPLE_CONSORTIUM, ROOT, wait_for_sync
from .process import YilianProcess, clean_env, running

README = ROOT / "README.md"
# The second shell of a new user: DCMTK from /usr/bin (not pynetdicom's scripts of an activated venv).
SHELL_PATH = "/usr/local/bin:/usr/bin:/bin"


def readme_walk() -> str:
    """The shell block of the README's "Try it" paragraph."""
    text = README.read_text("utf-8")
    found = re.search(r"```sh\n(.*?)```", text[text.index("Try it:"):], re.S)
    assert found, "README.md has no shell block after 'Try it:'"
    return found.group(1)


def quiet(output: str) -> bool:
    return "Traceback" not in output and "KeyboardInterrupt" not in output


@pytest.mark.parametrize("how", ["CONSORTIUM", "YILIAN_CONSORTIUM"])
def test_make_run_uses_the_consortium_it_is_given(tmp_path, how):
    mine = tmp_path / "my-consortium.yaml"
    mine.write_text(EXAMPLE_CONSORTIUM.read_text("utf-8").replace("id: demo-county", "id: my-county", 1), "utf-8")
    venv = Path(sys.prefix)
    # -o: this venv is installed already (`make run` would otherwise reinstall when pyproject.toml is newer).
    make = ["make", "--no-print-directory", "-C", str(ROOT), "-o", f"{venv}/.installed", f"VENV={venv}", "run"]
    if how == "CONSORTIUM":
        yl = YilianProcess(tmp_path / "data", command=[*make, f"CONSORTIUM={mine}"], args=())
    else:
        yl = YilianProcess(tmp_path / "data", command=make, args=(), YILIAN_CONSORTIUM=str(mine))
    try:
        yl.start()
        ready = next(json.loads(line) for line in yl.log_path.read_text().splitlines()
                     if '"message": "yilian ready"' in line)
        assert ready["consortium"] == "my-county"
        # Ctrl-C: yilian stops cleanly; make then ends by the same signal, as GNU make does.
        assert yl.signal_group(signal.SIGINT) in (0, -signal.SIGINT)
        assert quiet(yl.log_path.read_text())
    finally:
        if yl.alive():
            os.killpg(yl.proc.pid, signal.SIGKILL)
