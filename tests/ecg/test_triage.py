"""ECG triage on the workflow's runtime: one step up (urgent -> stat), stat stays, thresholds from
the environment, and a study announced after the request was queued."""

from __future__ import annotations

from services.ecg.prioritise import Thresholds
from services.workflow import ecg_triage
from services.workflow.commands import RequestReading
from services.workflow.service import execute

from ..support import wait_for
from ..workflow.conftest import world  # noqa: F401 - the fixture is used by name
from .synthetic import TWELVE_LEAD, ecg_dataset, write


async def ecg_study(w, tmp_path, heart_rate: float, *, announce: bool) -> str:
    """Index one stored 12-lead ECG as the gateway would; announce it with ``study.received`` or not."""
    ds = ecg_dataset(heart_rate, patient_id=f"P{heart_rate:g}")
    uid, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    path = write(ds, tmp_path, sop)
    key = f"{uid}/{series}/{sop}.dcm"
    await w.rt.blobs.put_file(key, path)
    async with w.store.transaction() as tx:
        await tx.put("instances", {"id": sop, "study_uid": uid, "series_uid": series, "organization": "chengguan-thc",
                                   "sop_class_uid": TWELVE_LEAD, "instance_number": 1, "blob_key": key})
    await w.add_study(uid, "chengguan-thc", ["ECG"], announce=announce, patient_id=f"P{heart_rate:g}")
    return uid


async def settled(w) -> bool:
    return (await w.rt.bus.lag()).get(ecg_triage.GROUP, 1) == 0 and await w.drained()


async def test_urgent_becomes_stat_stat_stays_and_limits_come_from_the_environment(world, tmp_path,  # noqa: F811
                                                                                   monkeypatch):
    monkeypatch.setenv("YILIAN_ECG_HR_LOW", "80")  # a 75 bpm ECG counts as too slow here
    world.rt.shared[ecg_triage.THRESHOLDS_KEY] = Thresholds.from_env()
    clinic = world.who("cg-clinic")
    slow_urgent = await ecg_study(world, tmp_path, 75, announce=False)
    slow_stat = await ecg_study(world, tmp_path, 60, announce=False)
    urgent = await execute(world.rt, RequestReading(slow_urgent, "ecg", "urgent", "胸闷"), actor=clinic)
    stat = await execute(world.rt, RequestReading(slow_stat, "ecg", "stat", "胸痛"), actor=clinic)
    assert urgent["state"] == stat["state"] == "queued"  # already arrived: reading.queued at once

    async def raised() -> bool:
        return (await world.store.get("reading_requests", urgent["id"]))["priority"] == "stat"
    await wait_for(raised, timeout=60, what="urgent raised to stat")
    await wait_for(lambda: settled(world), timeout=60, what="every event handled")
    doc = await world.store.get("reading_requests", urgent["id"])
    assert doc["priority_rank"] == 0 and doc["ecg_triage"]["reason"].startswith("heart rate 75 bpm < 80")
    assert doc["history"][-1]["action"] == "raise_priority" and doc["version"] == urgent["version"] + 1
    # the stat SLA for ECG (15 min) from the time it was queued: the deadline moved earlier
    assert doc["deadline"] < urgent["deadline"]
    assert (await world.store.get("reading_requests", stat["id"]))["priority"] == "stat"
    raised_events = await world.events(types=("reading.priority_raised",))
    assert [(e.subject, e.data["from_priority"], e.data["to_priority"]) for e in raised_events] == \
        [(urgent["id"], "urgent", "stat")]


async def test_request_waiting_for_its_ecg_is_raised_when_the_study_arrives(world, tmp_path):  # noqa: F811
    clinic = world.who("cg-clinic")
    ds = ecg_dataset(35)
    waiting = await execute(world.rt, RequestReading(ds.StudyInstanceUID, "ecg", "routine", "晕厥"), actor=clinic)
    assert waiting["state"] == "requested"
    # ... then the bradycardic ECG arrives and is announced
    path = write(ds, tmp_path, "late")
    key = f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
    await world.rt.blobs.put_file(key, path)
    async with world.store.transaction() as tx:
        await tx.put("instances", {"id": ds.SOPInstanceUID, "study_uid": ds.StudyInstanceUID,
                                   "series_uid": ds.SeriesInstanceUID, "organization": "chengguan-thc",
                                   "sop_class_uid": TWELVE_LEAD, "instance_number": 1, "blob_key": key})
    await world.add_study(ds.StudyInstanceUID, "chengguan-thc", ["ECG"])

    async def raised() -> bool:
        doc = await world.store.get("reading_requests", waiting["id"])
        return doc["state"] == "queued" and doc["priority"] == "urgent"
    await wait_for(raised, timeout=60, what="queued and raised to urgent")
    await wait_for(lambda: settled(world), timeout=60, what="every event handled")
    assert len(await world.events(types=("reading.priority_raised",))) == 1
    audit = await world.store.find("audit", {"action": "reading.priority_raise"})
    assert len(audit) == 1 and audit[0]["detail"]["breaches"][0]["measurement"] == "heart_rate"
