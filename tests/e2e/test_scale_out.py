"""The scale-out deployment as far as it runs here: every service a ``yilian serve`` process.

The five services run as separate processes on the Kafka broker the tests use (Tansu) and
share one SQLite store and blob directory (this machine has no MongoDB; docker-compose.yml
is not run).  A CT study goes to the gateway with DCMTK ``storescu``, a reader claims and signs
through the api, and the Structured Report arrives at the clinic's DCMTK ``storescp``.  Then a
second delivery process joins and the first is killed with ``kill -9``; the next report still
arrives.  Then the api runs with no workflow process and no delivery process: the reports it
signs (events with the workflow's source) reach the clinic once a delivery process runs.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp
import pytest
from pydicom import dcmread

from services.core.auth import issue_token
from services.core.consortium import load_consortium

from ..delivery.conftest import StoreSCP, consortium_file
from ..dicom_samples import make_study, storescu
from ..support import free_port, wait_for
from .process import YilianProcess

pytestmark = [pytest.mark.kafka, pytest.mark.dcmtk, pytest.mark.slow, pytest.mark.timeout(180)]

JWT = "test-secret-not-for-production"  # what YilianProcess sets
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR


def sr_studies(scp: StoreSCP) -> list[str]:
    """Study Instance UIDs of the Structured Reports the clinic's terminal received."""
    found = []
    for path in scp.files():
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - a file storescp is still writing
            continue
        if str(ds.SOPClassUID) == SR_CLASS:
            found.append(str(ds.StudyInstanceUID))
    return found


async def test_five_services_as_processes_on_kafka_sign_to_sr_with_a_kill_and_the_api_alone(
        tmp_path, tansu_url, yilian_process):
    scp = StoreSCP(tmp_path / "clinic-terminal", free_port())
    scp.start()
    consortium = consortium_file(tmp_path, scp_port=scp.port, webhook_port=None)
    bus = f"{tansu_url}?prefix=so{uuid.uuid4().hex[:8]}.&partitions=2&session_timeout_ms=1000"
    common = {"YILIAN_BUS_URL": bus, "YILIAN_KAFKA_IDEMPOTENT": "false", "YILIAN_CONSORTIUM": str(consortium),
              "YILIAN_STUDY_QUIET_SECONDS": "0.3", "YILIAN_RELAY_LEASE_SECONDS": "1", "YILIAN_LOG_LEVEL": "INFO",
              "YILIAN_DELIVERY_LEASE_SECONDS": "1", "YILIAN_DELIVERY_DICOM_TIMEOUT_SECONDS": "2",
              "YILIAN_DELIVERY_WEBHOOK_TIMEOUT_SECONDS": "2", "YILIAN_DELIVERY_FIRST_DELAY_SECONDS": "0.2",
              "YILIAN_DELIVERY_MAX_DELAY_SECONDS": "1", "YILIAN_DELIVERY_POLL_SECONDS": "0.1"}
    data = tmp_path / "data"  # one store and blob directory for every process

    def serve(name: str) -> YilianProcess:
        return yilian_process(data, args=("serve", name), **common)

    gateway, workflow, api, delivery, monitor = (serve(n) for n in (
        "pacs_gateway", "workflow", "api", "delivery", "monitor"))
    await asyncio.to_thread(gateway.start)  # first: it creates the store's tables
    await asyncio.gather(*(asyncio.to_thread(p.start) for p in (workflow, api, delivery, monitor)))
    for p in (gateway, workflow, api, delivery, monitor):
        assert p.http("/readyz")[0] == 200, p.log_tail()

    c = load_consortium(consortium)
    base = f"http://127.0.0.1:{api.http_port}"
    studies = [make_study(tmp_path / f"ct{i}", instances=1) for i in range(3)]
    sent = await asyncio.to_thread(storescu, gateway.dicom_port, [f for s in studies for f in s.files],
                                   calling="CG_CT1")
    assert sent.returncode == 0, sent.output
    latencies: list[float] = []
    try:
        async with aiohttp.ClientSession() as http:
            async def call(method: str, path: str, user: str, body=None, status: int = 200):
                async with http.request(method, base + path, json=body,
                                        headers={"Authorization": f"Bearer {issue_token(c, user, JWT)}"}) as r:
                    answer = await r.json()
                    assert r.status == status, (path, r.status, answer)
                    return answer

            async def read_and_sign(study_uid: str) -> float:
                async def received() -> bool:
                    async with http.get(base + f"/api/v1/studies/{study_uid}", headers={
                            "Authorization": f"Bearer {issue_token(c, 'cg-clinic', JWT)}"}) as r:
                        return r.status == 200 and (await r.json()).get("state") == "received"
                await wait_for(received, timeout=30, what="the study received")
                request = await call("POST", "/api/v1/reading-requests", "cg-clinic", {
                    "study_uid": study_uid, "kind": "imaging", "priority": "stat", "clinical_question": "外伤"},
                    status=201)
                await call("POST", f"/api/v1/reading-requests/{request['id']}/claim", "dr-wang", {})
                await call("POST", f"/api/v1/reading-requests/{request['id']}/sign", "dr-wang",
                           {"findings": "右侧第5肋骨骨折。", "impression": "右侧肋骨骨折"})
                return time.monotonic()

            async def sr_arrives(study_uid: str, what: str, timeout: float = 30) -> None:
                await wait_for(lambda: study_uid in sr_studies(scp), timeout=timeout, interval=0.01, what=what)

            # 1. Every service its own process: study -> sign -> SR at the clinic.
            signed = await read_and_sign(studies[0].study_uid)
            await sr_arrives(studies[0].study_uid, "the SR at the clinic's storescp")
            latencies.append(time.monotonic() - signed)

            # 2. A second delivery process joins; the first is killed with kill -9.
            second = serve("delivery")
            await asyncio.to_thread(second.start)
            await asyncio.to_thread(delivery.kill)
            signed = await read_and_sign(studies[1].study_uid)
            await sr_arrives(studies[1].study_uid, "the SR after kill -9 of a delivery process")
            latencies.append(time.monotonic() - signed)

            # 3. The api alone: no workflow process, no delivery process, while the reader signs.
            assert workflow.terminate() == 0 and second.terminate() == 0
            await read_and_sign(studies[2].study_uid)
            await asyncio.sleep(1)
            assert studies[2].study_uid not in sr_studies(scp)  # nobody delivers yet
            third = serve("delivery")
            await asyncio.to_thread(third.start)
            await sr_arrives(studies[2].study_uid, "the SR the api signed alone, once a delivery process runs")
        assert sorted(sr_studies(scp)) == sorted(s.study_uid for s in studies)  # one SR each
        for p in (gateway, api, third, monitor):
            assert p.terminate() == 0, p.log_tail()
    finally:
        scp.stop()
    print(f"sign -> SR at the clinic (s): {', '.join(f'{x:.3f}' for x in latencies)}")

