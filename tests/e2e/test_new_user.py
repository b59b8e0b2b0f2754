"""What a new user does first, for real: ``make run`` (with his own consortium), the README's
"Try it" walk pasted into a second shell, and Ctrl-C.

The walk is taken from README.md itself, so the README cannot drift from the code.
"""

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


@pytest.mark.dcmtk
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_readme_walk_brings_a_signed_result_to_the_clinic_inbox_and_a_stop_is_quiet(tmp_path, yilian_process,
                                                                                       sig):
    """After the walk every helper process runs (the gateway's indexer, the PDF worker that rendered
    the result). A terminal's Ctrl-C (SIGINT) and systemd's stop (SIGTERM) reach every process of
    the group: all stop, with exit status 0 and no traceback."""
    # A checkout as `make run` leaves it: .venv beside ./var, where the server keeps its token secret.
    checkout = tmp_path / "yilian"
    checkout.mkdir()
    (checkout / ".venv").symlink_to(sys.prefix)
    yl = yilian_process(checkout / "var", YILIAN_JWT_SECRET="", YILIAN_STUDY_QUIET_SECONDS="1",
                        YILIAN_GATEWAY_INDEXER="process")
    yl.start()
    # The second shell: in the same directory, without the server's YILIAN_DATA_DIR.
    walk = subprocess.run(["bash", "-eu", "-o", "pipefail", "-c", readme_walk()], cwd=checkout,
                          env=clean_env(PATH=SHELL_PATH, YILIAN_HTTP_PORT=str(yl.http_port),
                                        YILIAN_DICOM_PORT=str(yl.dicom_port)),
                          capture_output=True, text=True, timeout=240)
    assert walk.returncode == 0, walk.stdout + walk.stderr
    lines = walk.stdout.splitlines()
    assert lines[-4:-1] == ["claimed", "draft", "signed"], walk.stdout
    assert lines[-1].startswith("王建国 示例报告，未见明显异常。 "), walk.stdout
    assert "'inbox': 'delivered'" in lines[-1]
    children = yl.children()
    assert len(children) >= 2, children
    assert yl.signal_group(sig) == 0
    log = yl.log_path.read_text()
    assert quiet(log + yl.stdout_after_ready()), log
    assert '"message": "stopped"' in log
    # In order: the indexer process outlives the receiving side that still forwards to it.
    assert '"level": "error"' not in log and "indexer process lost" not in log, log[log.index('"stopping"') - 100:]
    wait_for_sync(lambda: not any(running(pid) for pid in children), timeout=10, what="helper processes to exit")


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
