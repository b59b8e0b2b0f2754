"""``yilian identity backfill`` (docs/identity.md): studies indexed before the consortium identity
existed get it from their stored headers, idempotently, through the real CLI on the gateway's data."""

from __future__ import annotations

import asyncio
import json

import pytest

from services.cli import main

from ..dicom_samples import storescu
from ..gateway.conftest import make_gateway, run  # noqa: F401 - the fixture is used by name
from ..support import wait_for
from .test_identity import OTHER_ZHANG, ZHANG, instance

pytestmark = pytest.mark.dcmtk


async def test_backfill_reads_the_identity_from_stored_headers_once(make_gateway, tmp_path, monkeypatch,
                                                                    capsys):  # noqa: F811
    gw = await make_gateway(study_quiet_seconds=30)
    rt = gw.rt
    cg, cg_file = instance(tmp_path, "cg", patient_id="CG001", national=ZHANG)
    db, db_file = instance(tmp_path, "db", patient_id="DB555", national=OTHER_ZHANG, study_date="20250302")
    anon, anon_file = instance(tmp_path, "anon", patient_id="HM778", study_date="20250303")
    for ae, path in (("CG_CT1", cg_file), ("DB_DR1", db_file), ("HM_DR1", anon_file)):
        sent = await run(storescu, gw.port, [path], calling=ae)
        assert sent.returncode == 0, sent.output
    uids = {"cg": cg.StudyInstanceUID, "db": db.StudyInstanceUID, "anon": anon.StudyInstanceUID}

    async def indexed() -> bool:
        return all([await rt.store.get("studies", uid) for uid in uids.values()])
    await wait_for(indexed, timeout=10, what="the three studies indexed")
    # As indexed before the identity existed: no identity on the studies nor the local patients
    # (dongba's patient keeps his: a value set is never overwritten, and the study still gets its own)
    async with rt.store.transaction() as tx:
        for uid in uids.values():
            await tx.update("studies", uid, {"identity": ""})
        await tx.update("patients", "chengguan-thc|CG001", {"identity": ""})

    monkeypatch.setenv("YILIAN_DATA_DIR", str(gw.data_dir))
    monkeypatch.setenv("YILIAN_STORE_URL", rt.settings.store_url)
    monkeypatch.setenv("YILIAN_BLOB_URL", rt.settings.blob_url)
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["identity", "backfill"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first == {"studies_without": 3, "studies_filled": 2, "patients_filled": 1, "unreadable": 0}
    assert (await rt.store.get("studies", uids["cg"]))["identity"] == f"CN_RESIDENT_ID|{ZHANG}"
    assert (await rt.store.get("studies", uids["db"]))["identity"] == f"CN_RESIDENT_ID|{OTHER_ZHANG}"
    assert not (await rt.store.get("studies", uids["anon"])).get("identity")  # none in its header: none guessed
    assert (await rt.store.get("patients", "chengguan-thc|CG001"))["identity"] == f"CN_RESIDENT_ID|{ZHANG}"

    # Idempotent: a second run fills nothing and changes nothing
    before = {uid: await rt.store.get("studies", uid) for uid in uids.values()}
    assert await asyncio.to_thread(main, ["identity", "backfill"]) == 0
    assert json.loads(capsys.readouterr().out) == {"studies_without": 1, "studies_filled": 0, "patients_filled": 0,
                                                   "unreadable": 0}
    assert {uid: await rt.store.get("studies", uid) for uid in uids.values()} == before
    # audited with counts only: the resident ID is not in the audit trail
    audited = await rt.store.find("audit", {"action": "identity.backfill"})
    assert sorted(a["detail"]["studies_filled"] for a in audited) == [0, 2]
    assert ZHANG not in json.dumps(audited) and OTHER_ZHANG not in json.dumps(audited)
