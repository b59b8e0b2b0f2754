"""``study.received``: once per quiet period and revision, re-opened by late instances, never twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ..dicom_samples import make_instance, make_study, storescu, write
from ..support import wait_for
from .conftest import CHENGGUAN_CT, CHENGGUAN_ECG, run

QUIET = 0.5


def _later() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


async def _announcements(gateway, study_uid: str) -> list[dict]:
    return [e["data"] for e in await gateway.events("study.received") if e["subject"] == study_uid]


async def test_quiet_study_is_announced_once_with_its_counts(make_gateway, tmp_path):
    gateway = await make_gateway(study_quiet_seconds=QUIET)
    study = make_study(tmp_path, series=2, instances=2, modality="DX", sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1")
    result = await run(storescu, gateway.port, study.files, calling=CHENGGUAN_CT)
    assert result.returncode == 0, result.output

    async def announced() -> bool:
        return len(await _announcements(gateway, study.study_uid)) == 1
    await wait_for(announced, timeout=10, what="study.received")
    [data] = await _announcements(gateway, study.study_uid)
    assert (data["series_count"], data["instance_count"], data["modalities"], data["revision"]) == (2, 4, ["DX"], 1)
    assert data["organization"] == "chengguan-thc" and data["patient_id"] == "P001"
    doc = await gateway.rt.store.get("studies", study.study_uid)
    assert doc["state"] == "received" and doc["revision"] == 1
    # Nothing new arrived: however much later we look, there is nothing more to announce.
    assert await gateway.service.announcer.announce_quiet(now=_later()) == 0
    # An identical duplicate is not new content either.
    again = await run(storescu, gateway.port, study.files[:1], calling=CHENGGUAN_CT)
    assert again.returncode == 0
    assert (await gateway.rt.store.get("studies", study.study_uid))["state"] == "received"
    assert await gateway.service.announcer.announce_quiet(now=_later()) == 0
    assert len(await _announcements(gateway, study.study_uid)) == 1


async def test_late_instance_reopens_the_study_and_is_announced_with_the_next_revision(make_gateway, tmp_path):
    gateway = await make_gateway(study_quiet_seconds=QUIET)
    study = make_study(tmp_path, instances=2)
    assert (await run(storescu, gateway.port, study.files, calling=CHENGGUAN_CT)).returncode == 0

    async def count() -> int:
        return len(await _announcements(gateway, study.study_uid))
    await wait_for(lambda: _eq(count(), 1), what="first study.received")
    # A late ECG in the same study: a new series, a new modality.
    late = write(make_instance(study_uid=study.study_uid, modality="ECG",
                               sop_class_uid="1.2.840.10008.5.1.4.1.1.9.1.1"), tmp_path / "late.dcm")
    assert (await run(storescu, gateway.port, [late], calling=CHENGGUAN_ECG)).returncode == 0
    await wait_for(lambda: _eq(count(), 2), what="second study.received")
    first, second = await _announcements(gateway, study.study_uid)
    assert (first["revision"], first["instance_count"], first["modalities"]) == (1, 2, ["CT"])
    assert (second["revision"], second["instance_count"], second["series_count"]) == (2, 3, 2)
    assert second["modalities"] == ["CT", "ECG"]


async def _eq(awaitable, value) -> bool:
    return (await awaitable) == value


async def test_announcement_loses_to_an_instance_arriving_meanwhile(make_gateway, tmp_path):
    """The compare-and-set: a study updated after the announcer looked is not announced stale."""
    gateway = await make_gateway(study_quiet_seconds=3600)  # the background loop stays out of it
    study = make_study(tmp_path, instances=1)
    assert (await run(storescu, gateway.port, study.files, calling=CHENGGUAN_CT)).returncode == 0
    announcer = gateway.service.announcer
    seen = (await gateway.rt.store.get("studies", study.study_uid))["last_update_at"]
    async with gateway.rt.store.transaction() as tx:  # an instance lands: last_update_at moves on
        await tx.update("studies", study.study_uid, {"last_update_at": "2999-01-01T00:00:00.000Z"})
    assert await announcer._announce(study.study_uid, seen) is False
    assert await _announcements(gateway, study.study_uid) == []
    async with gateway.rt.store.transaction() as tx:
        await tx.update("studies", study.study_uid, {"last_update_at": seen})
    assert await announcer.announce_quiet(now=_later()) == 1
    assert await announcer.announce_quiet(now=_later()) == 0
    assert [a["revision"] for a in await _announcements(gateway, study.study_uid)] == [1]
