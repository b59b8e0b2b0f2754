"""A township CT study sent with DCMTK's storescu through the real PACS gateway, then read
through the API: the clinic finds it and asks for a reading, the reader sees the index, the
neighbouring clinic sees nothing."""

from __future__ import annotations

import aiohttp
import pytest

from services.api.service import ApiService
from services.core.auth import issue_token
from tests.dicom_samples import chinese_instance, storescu, write
from tests.gateway.conftest import CHENGGUAN_CT, make_gateway, run  # noqa: F401 - make_gateway is a fixture
from tests.support import wait_for

pytestmark = pytest.mark.dcmtk


async def test_study_sent_by_storescu_is_served_by_the_api(make_gateway, tmp_path):
    gw = await make_gateway(study_quiet_seconds=0.3)
    study_uid = "1.2.826.0.1.3680043.10.999.1"
    files = [write(chinese_instance("GB18030", study_uid=study_uid, series_uid=study_uid + ".1",
                                    instance_number=i + 1, patient_id="CG-GW-1"), tmp_path / f"ct{i}.dcm")
             for i in range(2)]
    sent = await run(storescu, gw.port, files, calling=CHENGGUAN_CT)
    assert sent.returncode == 0, sent.output

    async def received() -> bool:
        doc = await gw.rt.store.get("studies", study_uid)
        return doc is not None and doc.get("state") == "received"
    await wait_for(received, timeout=15, what="study.received from the gateway")

    api = ApiService(gw.rt)
    await api.start()
    base = f"http://127.0.0.1:{api.port}/api/v1"
    secret = gw.rt.settings.secret()

    def auth(user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(gw.rt.consortium, user, secret)}"}
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/studies", headers=auth("cg-clinic")) as resp:
                assert resp.status == 200
                (study,) = (await resp.json())["items"]
            assert study["id"] == study_uid and study["patient_name"] == "张^三"
            assert study["organization"] == "chengguan-thc" and study["reading_requests"] == []

            async with http.post(f"{base}/reading-requests", headers=auth("cg-clinic"), json={
                    "study_uid": study_uid, "kind": "imaging", "priority": "urgent",
                    "clinical_question": "外伤后头痛，排除颅内出血"}) as resp:
                assert resp.status == 201, await resp.text()
                created = await resp.json()
            assert created["state"] == "queued" and created["centre"] == "county-imaging"
            assert created["modality"] == "CT"

            async with http.get(f"{base}/worklist", headers=auth("dr-wang")) as resp:
                assert [t["id"] for t in (await resp.json())["items"]] == [created["id"]]
            async with http.get(f"{base}/studies/{study_uid}", headers=auth("dr-wang")) as resp:
                assert resp.status == 200
                detail = await resp.json()
            assert [s["modality"] for s in detail["series"]] == ["CT"]
            assert [i["instance_number"] for i in detail["instances"]] == [1, 2]
            assert all(i["sha256"] and i["calling_ae"] == CHENGGUAN_CT for i in detail["instances"])

            for user in ("db-clinic", "dr-zhao"):
                async with http.get(f"{base}/studies/{study_uid}", headers=auth(user)) as resp:
                    assert resp.status == 404, user
    finally:
        await api.stop()
    reads = await gw.rt.store.find("audit", {"resource": f"study/{study_uid}", "action": "study.read"})
    assert {(r["actor"], r["outcome"]) for r in reads} == {("dr-wang", "success"), ("db-clinic", "not_found"),
                                                          ("dr-zhao", "not_found")}
