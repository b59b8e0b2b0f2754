"""End to end on the embedded default: DCMTK storescu sends two 12-lead ECGs to a real gateway;
the bradycardic one raises its reading request's priority, the normal one does not; readers
and clinics view them through the HTTP API, scoped and audited."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET

import aiohttp
import pytest
from PIL import Image

from services.api.service import ApiService
from services.core.auth import Principal, issue_token
from services.core.events import Event
from services.workflow import WorkflowService, ecg_triage
from services.workflow.commands import Claim, Escalate, RequestReading
from services.workflow.leases import WorkflowSettings, parse_iso
from services.workflow.service import execute

from ..dicom_samples import storescu
from ..gateway.conftest import make_gateway, run  # noqa: F401 - the fixture is used by name
from ..support import wait_for
from .synthetic import ecg_dataset, write

pytestmark = pytest.mark.dcmtk

SECRET = "ecg-test-secret-" + "z" * 32


def conforms(name: str, instance) -> None:
    """``instance`` matches ``components.schemas.<name>`` of schemas/openapi.yaml."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    from services.api.validation import spec
    registry = Registry().with_resource("urn:t", Resource.from_contents(spec(), default_specification=DRAFT202012))
    Draft202012Validator({"$ref": f"urn:t#/components/schemas/{name}"}, registry=registry).validate(instance)


def principal(rt, user_id: str) -> Principal:
    user = rt.consortium.users[user_id]
    return Principal(user.id, user.role, user.organization, user.centre, "test")


async def test_bradycardia_raises_priority_normal_does_not_and_the_view_is_scoped(make_gateway, tmp_path):  # noqa: F811
    gw = await make_gateway(study_quiet_seconds=0.3, jwt_secret=SECRET)
    rt = gw.rt
    rt.bus.poll_interval = 0.05
    workflow = WorkflowService(rt, WorkflowSettings(lease_seconds=600, sweep_interval=3600))
    api = ApiService(rt)
    await workflow.start()
    await api.start()
    await rt.bus.start()
    try:
        slow = ecg_dataset(35, patient_name="王^五", patient_id="ECG035")
        normal = ecg_dataset(75, patient_name="李^四", patient_id="ECG075")
        cg = principal(rt, "cg-clinic")
        # 城关镇卫生院 asks for routine readings before its ECGs arrive
        slow_rr = await execute(rt, RequestReading(slow.StudyInstanceUID, "ecg", "routine", "头晕乏力"), actor=cg)
        normal_rr = await execute(rt, RequestReading(normal.StudyInstanceUID, "ecg", "routine", "体检"), actor=cg)
        sent = await run(storescu, gw.port, [write(slow, tmp_path, "slow"), write(normal, tmp_path, "normal")],
                         calling="CG_ECG1")
        assert sent.returncode == 0, sent.output

        async def doc(rid):
            return await rt.store.get("reading_requests", rid)

        async def raised() -> bool:
            return (await doc(slow_rr["id"]))["priority"] == "urgent"
        await wait_for(raised, timeout=60, what="the bradycardic ECG's request raised to urgent")

        async def settled() -> bool:
            return (await doc(normal_rr["id"]))["state"] == "queued" and \
                (await rt.bus.lag()).get(ecg_triage.GROUP, 1) == 0
        await wait_for(settled, timeout=60, what="the triage consumer has seen every event")

        # --- the raise: recorded on the request, as an event and in the audit ---
        brady = await doc(slow_rr["id"])
        assert brady["priority_rank"] == 1 and brady["state"] == "queued" and brady["centre"] == "county-ecg"
        triage = brady["ecg_triage"]
        assert (triage["from"], triage["to"], triage["by"]) == ("routine", "urgent", "system:ecg_triage")
        assert [b["measurement"] for b in triage["breaches"]] == ["heart_rate"]
        assert abs(triage["measurements"]["heart_rate"] - 35) <= 3 and "bradycardia" in triage["reason"]
        # ECG SLA: routine 12 h, urgent 1 h, from when it was queued
        assert abs(parse_iso(brady["deadline"]) - parse_iso(brady["queued_at"]) - 3600) < 1
        events = [e.event for e in await rt.store.read_log(0, limit=10_000, types=["reading.priority_raised"])]
        assert len(events) == 1 and events[0].subject == slow_rr["id"]
        assert events[0].data["from_priority"] == "routine" and events[0].data["to_priority"] == "urgent"
        assert events[0].data["sop_instance_uid"] == slow.SOPInstanceUID and events[0].data["lead"] == "II"
        audits = await rt.store.find("audit", {"action": "reading.priority_raise"})
        assert [(a["resource"], a["actor"]) for a in audits] == [(f"reading/{slow_rr['id']}", "system:ecg_triage")]
        # the normal ECG: untouched
        calm = await doc(normal_rr["id"])
        assert calm["priority"] == "routine" and not calm.get("ecg_triage")

        # --- idempotent and never twice: redelivery, a re-announcement, a later reading.queued ---
        queued = [e.event for e in await rt.store.read_log(0, limit=10_000, types=["reading.queued"])
                  if e.event.subject == slow_rr["id"]][0]
        await ecg_triage.on_event(rt, queued)
        await ecg_triage.on_event(rt, Event(queued.type, queued.subject, queued.data, source=queued.source))
        assert (await doc(slow_rr["id"]))["priority"] == "urgent"
        assert len(await rt.store.read_log(0, limit=10_000, types=["reading.priority_raised"])) == 1
        # an escalation inherits the raised priority and is not raised again
        zhao = principal(rt, "dr-zhao")
        await execute(rt, Claim(slow_rr["id"]), actor=zhao)
        await execute(rt, Escalate(slow_rr["id"], "请上级会诊"), actor=zhao)
        upper = (await rt.store.find("reading_requests", {"escalated_from": slow_rr["id"]}))[0]

        async def upper_seen() -> bool:
            return (await rt.bus.lag()).get(ecg_triage.GROUP, 1) == 0
        await wait_for(upper_seen, timeout=60, what="the escalation's reading.queued handled")
        assert (await doc(upper["id"]))["priority"] == "urgent"

        # --- the reading view over HTTP ---
        base = f"http://127.0.0.1:{api.port}/api/v1/studies/{slow.StudyInstanceUID}/instances/{slow.SOPInstanceUID}/ecg"

        async with aiohttp.ClientSession() as http:
            async def get(user: str, path: str = "", url: str = base):
                token = issue_token(rt.consortium, user, SECRET)
                async with http.get(url + path, headers={"Authorization": f"Bearer {token}"}) as resp:
                    return resp.status, resp.content_type, await resp.read()

            status, ctype, body = await get("dr-sun")  # city-ecg: now reads the escalation
            assert status == 200 and ctype == "application/json"
            wave = json.loads(body)
            conforms("EcgWaveform", wave)
            assert [lead["name"] for lead in wave["leads"]] == ["I", "II", "III", "aVR", "aVL", "aVF",
                                                                 "V1", "V2", "V3", "V4", "V5", "V6"]
            assert {lead["unit"] for lead in wave["leads"]} == {"mV"}
            assert wave["sampling_rate"] == 500 and wave["duration"] == 10 and wave["sample_count"] == 5000
            assert all(len(lead["samples"]) == 5000 for lead in wave["leads"])
            status, _, body = await get("cg-clinic", "?max_rate=100")
            assert status == 200 and json.loads(body)["sampling_rate"] == 100
            assert len(json.loads(body)["leads"][1]["samples"]) == 1000

            status, ctype, body = await get("dr-zhao", ".svg")
            assert status == 200 and ctype == "image/svg+xml"
            labels = [t.text for t in ET.fromstring(body).iter("{http://www.w3.org/2000/svg}text")]
            assert "王五" in labels and "V6" in labels
            status, ctype, body = await get("dr-zhao", ".png?px_per_mm=4")
            assert status == 200 and ctype == "image/png" and Image.open(io.BytesIO(body)).size == (1100, 680)

            status, _, body = await get("dr-zhao", "/measurements")
            pre = json.loads(body)
            conforms("EcgMeasurements", pre)
            assert status == 200 and pre["kind"] == "automatic pre-read, not a report" and pre["lead"] == "II"
            assert abs(pre["measurements"]["heart_rate"]["value"] - 35) <= 3
            status, _, body = await get("dr-zhao", "/measurements?lead=V9")
            assert status == 422 and b"V9" in body

            # another clinic, another centre's reader, the auditor: the ECG does not exist for them
            for user, expected in (("db-clinic", 404), ("zz-clinic", 404), ("dr-wang", 404), ("auditor", 403)):
                for path in ("", ".svg", ".png", "/measurements"):
                    status, ctype, _ = await get(user, path)
                    assert (status, ctype) == (expected, "application/problem+json"), (user, path, status)
            # an instance the study does not have, or that is not an ECG: 404
            status, _, _ = await get("dr-zhao", url=base.replace(slow.SOPInstanceUID, normal.SOPInstanceUID))
            assert status == 404

        reads = await rt.store.find("audit", {"action": {"$in": ["ecg.read", "ecg.sheet", "ecg.measurements"]}})
        ok = [(a["actor"], a["action"]) for a in reads if a["outcome"] == "success"]
        assert ("dr-zhao", "ecg.sheet") in ok and ("dr-sun", "ecg.read") in ok and ("dr-zhao", "ecg.measurements") in ok
        refused = [a for a in reads if a["outcome"] == "not_found"]
        assert {a["actor"] for a in refused} >= {"db-clinic", "zz-clinic", "dr-wang"}
        assert {a["resource"] for a in refused if a["actor"] != "dr-zhao"} == {f"instance/{slow.SOPInstanceUID}"}
    finally:
        await api.stop()
        await workflow.stop()
        await rt.bus.stop()
