"""``kill -9`` of a real ``yilian edge`` process mid-transfer: after the restart every instance
reaches the centre once, nothing the centre held is sent again but the request in flight, and
the study is announced once."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path

from pydicom.uid import generate_uid

from services.core.auth import issue_token
from tests.dicomweb.conftest import SECRET
from tests.e2e.process import YilianProcess, clean_env, yilian_command
from tests.support import EXAMPLE_CONSORTIUM, wait_for

from .faultproxy import FaultProxy
from .test_forward import random_instance, storescu


async def audit_outcomes(centre) -> dict[str, int]:
    """What the centre's ingest did with every instance the edge sent (new, identical, ...)."""
    totals: dict[str, int] = {}
    for doc in await centre.rt.store.find("audit", {"action": "dicomweb.store"}):
        for outcome, n in ((doc.get("detail") or {}).get("results") or {}).items():
            totals[outcome] = totals.get(outcome, 0) + n
    return totals


async def test_kill_9_mid_transfer_loses_and_duplicates_nothing(centre, link_to, tmp_path: Path):
    proxy: FaultProxy = await link_to(bytes_per_second=300_000)  # slow enough to kill it mid-way
    study = generate_uid()
    (tmp_path / "src").mkdir()
    series = generate_uid()
    files = [random_instance(tmp_path / "src", study_uid=study, series_uid=series, number=i, rows=128,
                             modality="CT", sop_class="1.2.840.10008.5.1.4.1.1.2") for i in range(60)]
    token = issue_token(centre.rt.consortium, "cg-edge", SECRET)
    edge = YilianProcess(tmp_path / "edge", args=("edge",), YILIAN_CONSORTIUM=str(EXAMPLE_CONSORTIUM),
                         YILIAN_AE_TITLE="CG_EDGE", YILIAN_STUDY_QUIET_SECONDS="0.3", YILIAN_GATEWAY_INDEXER="inline",
                         YILIAN_EDGE_CENTRE_URL=f"http://127.0.0.1:{proxy.port}", YILIAN_EDGE_TOKEN=token,
                         YILIAN_EDGE_ORGANIZATION="chengguan-thc", YILIAN_EDGE_BATCH_BYTES="100000",
                         YILIAN_EDGE_RETRY_FIRST_SECONDS="0.05", YILIAN_EDGE_RETRY_MAX_SECONDS="0.5",
                         YILIAN_EDGE_POLL_SECONDS="0.1", YILIAN_EDGE_HEARTBEAT_SECONDS="0.5")
    edge.start()
    try:
        await asyncio.to_thread(storescu, edge.dicom_port, files)

        async def part_way() -> bool:
            return 10 <= await centre.rt.store.count("instances", {"study_uid": study}) < 50
        await wait_for(part_way, timeout=30, what="the centre holding part of the study")
        edge.signal_group(signal.SIGKILL)
        held_at_kill = await centre.rt.store.count("instances", {"study_uid": study})
        assert held_at_kill < len(files) and not await centre.events("study.received")
        edge.start()

        async def announced() -> bool:
            return bool(await centre.events("study.received"))
        await wait_for(announced, timeout=60, what="the study complete and announced after the restart")
        assert await centre.rt.store.count("instances", {"study_uid": study}) == len(files)
        assert [e["data"]["study_uid"] for e in await centre.events("study.received")] == [study]
        status = subprocess.run([*yilian_command(), "edge", "status"], capture_output=True, text=True, timeout=30,
                                env=clean_env(YILIAN_HTTP_PORT=str(edge.http_port)))
        assert status.returncode == 0, status.stderr
        shown = json.loads(status.stdout)
        assert shown["organization"] == "chengguan-thc" and shown["backlog_instances"] == 0
        outcomes = await audit_outcomes(centre)
        assert outcomes.get("new") == len(files)
        # Only the request in flight at the kill may come again (at most one batch: 100 kB / 16 kB).
        assert outcomes.get("identical", 0) <= 7, outcomes
    finally:
        edge.kill()
