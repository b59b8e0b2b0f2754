"""Retention-aware deletion and sealing (封存) on every store adapter (issue 14)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from services.core import audit, sealing
from services.core.consortium import RetentionConfig
from services.core.deletion import Refused, delete_report, delete_study

from .adapters import STORE_ADAPTERS, file_blobs

NOW = datetime(2026, 12, 2, tzinfo=UTC)
WHO = {"actor": "admin", "role": "admin", "remote": None}


@pytest.fixture(params=sorted(STORE_ADAPTERS))
async def store(request, tmp_path):
    async with STORE_ADAPTERS[request.param](tmp_path) as s:
        yield s


@pytest.fixture
async def blobs(tmp_path):
    async with file_blobs(tmp_path) as b:
        yield b


async def patient(store, blobs, *, at: str) -> list[str]:
    """Patient P1 at org-a: two studies of one instance each (with files) and a report."""
    keys = []
    async with store.transaction() as tx:
        for n in (1, 2):
            uid = f"1.2.3.{n}"
            body = f"instance {n}".encode() * 50
            sha = hashlib.sha256(body).hexdigest()
            key = f"{uid}/{uid}.1/{uid}.1.1.{sha[:16]}.dcm"
            await blobs.put_bytes(key, [body], sha256=sha)
            keys.append(key)
            await tx.put("studies", {"id": uid, "organization": "org-a", "patient_id": "P1",
                                     "first_received_at": at, "last_update_at": at, "record_class": "outpatient"})
            await tx.put("series", {"id": f"{uid}.1", "study_uid": uid})
            await tx.put("instances", {"id": f"{uid}.1.1", "study_uid": uid, "series_uid": f"{uid}.1",
                                       "blob_key": key, "sha256": sha, "size": len(body)})
        await tx.put("reports", {"id": "rp-1", "study_uid": "1.2.3.1", "organization": "org-a", "signed_at": at,
                                 "impression": "未见异常", "addenda": []})
    return keys


async def test_deletion_waits_for_the_period_and_for_unsealing(store, blobs):
    keys = await patient(store, blobs, at="2005-01-01T00:00:00.000Z")
    config = RetentionConfig()
    seal = await sealing.seal(store, blobs, organization="org-a", patient_id="P1", reason="纠纷", **WHO)
    assert [i["sop_instance_uid"] for i in seal["manifest"]["instances"]] == ["1.2.3.1.1.1", "1.2.3.2.1.1"]
    with pytest.raises(Refused) as refused:
        await delete_study(store, blobs, config, "1.2.3.2", now=NOW, **WHO)
    assert refused.value.slug == "sealed"
    with pytest.raises(sealing.SealError):
        await sealing.seal(store, blobs, organization="org-a", patient_id="P1", reason="again", **WHO)
    await sealing.unseal(store, seal["id"], reason="调解完毕", **WHO)

    done = await delete_study(store, blobs, config, "1.2.3.2", now=NOW, **WHO)
    assert done["retention"]["retained_until"] == "2020-01-01T00:00:00.000Z"
    assert await store.get("studies", "1.2.3.2") is None
    assert await store.count("instances", {"study_uid": "1.2.3.2"}) == 0
    assert not await blobs.exists(keys[1])
    await delete_report(store, config, "rp-1", now=NOW, **WHO)
    # the sealed copy outlives what it copied
    result = await sealing.verify(store, blobs, await store.get(sealing.SEALS, seal["id"]))
    assert result["intact"] and result["changed_since"] == ["instance/1.2.3.2.1.1", "report/rp-1"]
    actions = [d["action"] for d in await store.find("audit", sort=(("seq", 1),))]
    assert actions == ["patient.seal", "patient.unseal", "study.delete", "report.delete"]
    assert (await audit.verify(store)).intact


async def test_inside_the_period_nothing_is_deleted(store, blobs):
    keys = await patient(store, blobs, at="2020-01-01T00:00:00.000Z")
    with pytest.raises(Refused) as refused:
        await delete_study(store, blobs, RetentionConfig(), "1.2.3.1", now=NOW, **WHO)
    assert refused.value.slug == "retention-period"
    assert refused.value.extensions["retention"]["retained_until"] == "2035-01-01T00:00:00.000Z"
    with pytest.raises(Refused):
        await delete_report(store, RetentionConfig(years={"outpatient": 5, "inpatient": 30}), "rp-1",
                            now=datetime(2024, 12, 31, tzinfo=UTC), **WHO)
    assert await store.get("studies", "1.2.3.1") and await store.get("reports", "rp-1")
    assert await blobs.exists(keys[0]) and await store.count("audit") == 0
