"""Issue 6's proof, on the embedded bus and on Kafka (Tansu): a township study goes in with DCMTK
storescu; the clinic asks for a consultation attaching it; the coordinator schedules two
specialists of two centres, a double booking is refused, the slot is moved once; both write
notes; the lead signs an up-referral; the opinion reaches the clinic's inbox and its DCMTK
storescp terminal (SR + PDF) and is acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from pathlib import Path

import aiohttp
import pytest
from pydicom import dcmread

from services.api.service import ApiService
from services.core.bus.relay import OutboxRelay
from services.core.runtime import build_runtime
from services.core.settings import Settings
from services.delivery import DeliveryService
from services.delivery.settings import DeliverySettings
from services.pacs_gateway import GatewayService
from services.workflow import WorkflowService
from services.workflow.leases import WorkflowSettings, iso

from ..delivery.conftest import FAST, SECRET, WEBHOOK_ENV, WEBHOOK_SECRET, StoreSCP, Yilian, consortium_file
from ..delivery.conftest import clinic_scp, webhook_receiver  # noqa: F401 - fixtures
from ..dicom_samples import make_study, storescu
from ..support import free_port, wait_for
from ..tansu import _stop_session_tansu, tansu_url  # noqa: F401 - fixtures

pytestmark = pytest.mark.dcmtk

BASE = "/api/v1/consultations"
SR_CLASS, PDF_CLASS = "1.2.840.10008.5.1.4.1.1.88.11", "1.2.840.10008.5.1.4.1.1.104.1"
SERVICES = ("pacs_gateway", "workflow", "api", "delivery", "runtime")


@contextlib.asynccontextmanager
async def yilian(tmp_path: Path, bus_url: str, scp_port: int, webhook_port: int):
    """Gateway, workflow, api and delivery in this process over SQLite and ``bus_url``."""
    data_dir = tmp_path / "yilian"
    data_dir.mkdir(exist_ok=True)
    settings = Settings(
        data_dir=data_dir, consortium_path=consortium_file(data_dir, scp_port=scp_port, webhook_port=webhook_port),
        store_url=f"sqlite:///{data_dir / 'yilian.db'}", bus_url=bus_url, blob_url=f"file://{data_dir / 'blobs'}",
        bind_host="127.0.0.1", http_port=free_port(), dicom_port=free_port(), ae_title="YILIAN", jwt_secret=SECRET,
        study_quiet_seconds=0.5, kafka_idempotent=False)  # Tansu lacks the idempotent-producer handshake
    rt = await build_runtime(settings)
    gateway, api = GatewayService(rt), ApiService(rt)
    services = [gateway, WorkflowService(rt, WorkflowSettings.from_env(sweep_interval=0.2)), api,
                DeliveryService(rt, DeliverySettings.from_env(**FAST))]
    relay = None
    session = aiohttp.ClientSession()
    try:
        for s in services:
            await s.start()
        if rt.bus.relays_outbox:
            relay = OutboxRelay(rt.store, rt.bus, sources=[rt.source(n) for n in SERVICES])
            await relay.start()
        await rt.bus.start()
        yield Yilian(rt, api, gateway, services[3], session, tmp_path)
    finally:
        await session.close()
        with contextlib.suppress(Exception):
            await rt.bus.stop()
        if relay is not None:
            with contextlib.suppress(Exception):
                await relay.stop()
        for s in reversed(services):
            with contextlib.suppress(Exception):
                await s.stop()
        await rt.blobs.close()
        await rt.store.close()


def next_slot(hours_ahead: int, minutes: int = 60) -> dict[str, str]:
    start = (int(time.time()) // 3600 + hours_ahead) * 3600
    return {"start": iso(start), "end": iso(start + minutes * 60)}


async def consultation_flow(y: Yilian, clinic_scp: StoreSCP) -> None:  # noqa: F811
    study = make_study(y.tmp / "modality", series=1, instances=2, patient_name="李^四", patient_id="CG-0042",
                       charset="GB18030")
    sent = await asyncio.to_thread(storescu, y.gateway.dicom_port, study.files, calling="CG_CT1")
    assert sent.returncode == 0, sent.output

    async def received() -> bool:
        doc = await y.rt.store.get("studies", study.study_uid)
        return doc is not None and doc.get("state") == "received"
    await wait_for(received, timeout=30, what="study.received")

    created = await y.ok("POST", BASE, "cg-clinic", {
        "chief_complaint": "活动后胸痛两周", "history": "糖尿病五年", "current_treatment": "二甲双胍",
        "question": "是否需要上转行冠脉造影？", "urgency": "urgent", "study_uids": [study.study_uid]}, status=201)
    cid = created["id"]
    assert created["patient_id"] == "CG-0042" and created["patient_name"] == "李^四"
    await y.ok("POST", f"{BASE}/{cid}/triage", "coord-county", {"note": "多学科会诊"})
    first = next_slot(24)
    scheduled = await y.ok("POST", f"{BASE}/{cid}/schedule", "coord-county",
                           {**first, "specialists": ["dr-chen", "dr-wang"]})  # city-imaging + county-imaging
    assert {m["centre"] for m in scheduled["specialists"]} == {"city-imaging", "county-imaging"}

    other = await y.ok("POST", BASE, "db-clinic", {"chief_complaint": "头晕", "question": "?", "urgency": "routine",
                                                   "patient_name": "周^七"}, status=201)
    await y.ok("POST", f"{BASE}/{other['id']}/triage", "coord-county", {})
    status, problem = await y.call("POST", f"{BASE}/{other['id']}/schedule", "coord-county",
                                   {**first, "specialists": ["dr-chen"]})
    assert status == 409 and "dr-chen" in problem["detail"] and cid in problem["detail"], problem

    await y.ok("POST", f"{BASE}/{cid}/reschedule", "coord-county", {**next_slot(26), "reason": "市级专家手术"})
    await y.ok("POST", f"{BASE}/{other['id']}/schedule", "coord-county", {**first, "specialists": ["dr-chen"]})

    case = await y.ok("GET", f"{BASE}/{cid}/case", "dr-chen")
    assert [s["id"] for s in case["studies"]] == [study.study_uid]
    await y.ok("POST", f"{BASE}/{cid}/start", "dr-wang")
    await y.ok("POST", f"{BASE}/{cid}/notes", "dr-wang", {"text": "CT 示冠脉钙化"}, status=201)
    await y.ok("POST", f"{BASE}/{cid}/notes", "dr-chen", {"text": "同意，建议造影"}, status=201)
    done = await y.ok("POST", f"{BASE}/{cid}/opinion", "dr-chen", {
        "assessment": "冠心病可能性大", "signers": ["dr-wang"], "recommendations": {
            "disposition": "up_refer", "referral": {"hospital": "示范市第一人民医院", "department": "心内科"},
            "follow_up_date": "2030-02-01"}})
    opinion_id = done["opinion"]["id"]

    # delivery: the clinic's terminal gets the SR and the PDF, its inbox the result, acknowledged
    await wait_for(lambda: len(clinic_scp.files()) >= 2, timeout=60, what="SR and PDF at the clinic's storescp")
    by_class = {ds.SOPClassUID: ds for ds in (dcmread(p) for p in clinic_scp.files())}
    assert set(by_class) == {SR_CLASS, PDF_CLASS}
    assert by_class[SR_CLASS].StudyInstanceUID == study.study_uid and by_class[SR_CLASS].PatientID == "CG-0042"
    sr_text = " ".join(str(v.value) for v in by_class[SR_CLASS].iterall() if v.keyword == "TextValue")
    assert "冠心病可能性大" in sr_text and "上转" in sr_text and "示范市第一人民医院 心内科" in sr_text, sr_text
    # each signer is a Verifying Observer of his own, with his own centre (not one "陈志强、王建国")
    observers = {str(v.VerifyingObserverName): v.VerifyingOrganization
                 for v in by_class[SR_CLASS].VerifyingObserverSequence}
    assert observers == {"陈志强": "市区域影像中心", "王建国": "县域影像诊断中心"}, observers

    async def acknowledged() -> bool:
        status, result = await y.call("GET", f"/api/v1/results/{opinion_id}", "cg-clinic")
        return status == 200 and bool(result.get("acknowledgement"))
    await wait_for(acknowledged, timeout=30, what="the opinion acknowledged")
    result = await y.ok("GET", f"/api/v1/results/{opinion_id}", "cg-clinic")
    assert result["consultation_id"] == cid
    types = [e["type"] for e in await y.events("consultation.concluded")]
    assert types == ["consultation.concluded"]
    delivered = {e["data"]["channel"] for e in await y.events("result.delivered")
                 if e["data"]["result_id"] == opinion_id}
    assert {"dicom", "inbox"} <= delivered
    assert (await y.call("GET", f"/api/v1/results/{opinion_id}", "db-clinic"))[0] == 404


async def test_consultation_end_to_end_embedded(tmp_path, monkeypatch, clinic_scp, webhook_receiver):  # noqa: F811
    monkeypatch.setenv(WEBHOOK_ENV, WEBHOOK_SECRET)
    clinic_scp.start()
    async with yilian(tmp_path, "embedded:", clinic_scp.port, webhook_receiver.port) as y:
        await consultation_flow(y, clinic_scp)


async def test_consultation_end_to_end_kafka(tmp_path, monkeypatch, clinic_scp, webhook_receiver,  # noqa: F811
                                             tansu_url):  # noqa: F811
    monkeypatch.setenv(WEBHOOK_ENV, WEBHOOK_SECRET)
    clinic_scp.start()
    prefix = "cs" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:10] + "."
    url = f"{tansu_url}?prefix={prefix}&session_timeout_ms=1000"
    async with yilian(tmp_path, url, clinic_scp.port, webhook_receiver.port) as y:
        await consultation_flow(y, clinic_scp)
        # the events really went through the broker: the relay marked them relayed
        assert not [e for e in await y.rt.store.read_unrelayed(limit=10)
                    if e.event.type.startswith("consultation.")]

