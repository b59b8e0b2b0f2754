"""Patient identity across the consortium (EMPI, docs/identity.md), end to end on a real gateway:
DICOM with Other Patient IDs Sequence sent by DCMTK storescu from three townships, priors read by
a reader through the API, the resident ID masked, name + birth date only a suggestion a
coordinator confirms."""

from __future__ import annotations

import json
import logging

import aiohttp
import pytest
from pydicom.dataset import Dataset

from services.api.service import ApiService
from services.core.auth import issue_token
from services.core.identity import check_digit
from services.workflow import WorkflowService
from services.workflow.leases import WorkflowSettings

from ..dicom_samples import make_instance, storescu, write
from ..gateway.conftest import make_gateway, run  # noqa: F401 - the fixture is used by name
from ..support import wait_for

pytestmark = pytest.mark.dcmtk
SECRET = "test-secret-" + "x" * 32


def resident_id(first17: str) -> str:
    return first17 + check_digit(first17)


ZHANG = resident_id("41010119600101123")  # 张三's resident ID
OTHER_ZHANG = resident_id("41272819600101456")  # another 张三, born the same day


def instance(tmp_path, name: str, *, patient_id: str, national: str | None = None, issuer: str = "CN_RESIDENT_ID",
             study_date: str = "20261123") -> tuple[Dataset, object]:
    ds = make_instance(patient_id=patient_id, patient_name="Zhang^San", study_date=study_date,
                       accession_number="A" + name)
    ds.PatientBirthDate = "19600101"
    if national:
        item = Dataset()
        item.PatientID, item.IssuerOfPatientID, item.TypeOfPatientID = national, issuer, "TEXT"
        ds.OtherPatientIDsSequence = [item]
    return ds, write(ds, tmp_path / f"{name}.dcm")


class Api:
    def __init__(self, port: int, rt) -> None:
        self.base, self.rt = f"http://127.0.0.1:{port}", rt

    async def call(self, method: str, path: str, user: str, body: dict | None = None) -> tuple[int, dict]:
        token = issue_token(self.rt.consortium, user, SECRET)
        async with aiohttp.ClientSession() as http:
            async with http.request(method, self.base + path, json=body,
                                    headers={"Authorization": f"Bearer {token}"}) as resp:
                return resp.status, await resp.json(content_type=None)

    async def ok(self, method: str, path: str, user: str, body: dict | None = None, status: int = 200) -> dict:
        got, answer = await self.call(method, path, user, body)
        assert got == status, (method, path, got, answer)
        return answer


async def test_priors_follow_the_resident_id_never_name_and_birth_date(make_gateway, tmp_path, caplog):  # noqa: F811
    caplog.set_level(logging.DEBUG)
    gw = await make_gateway(jwt_secret=SECRET, study_quiet_seconds=0.3)
    rt = gw.rt
    workflow = WorkflowService(rt, WorkflowSettings(sweep_interval=3600))
    await workflow.start()
    await rt.bus.start()
    service = ApiService(rt)
    await service.start()
    api = Api(service.port, rt)
    try:
        # chengguan: 张三 (CG001) with his resident ID; hongmiao: the same man (HM777), the same ID;
        # dongba: another 张三 born the same day (another resident ID); hongmiao: a 张三 with none (HM778)
        cg, cg_file = instance(tmp_path, "cg", patient_id="CG001", national=ZHANG)
        hm, hm_file = instance(tmp_path, "hm", patient_id="HM777", national=ZHANG, study_date="20250301")
        db, db_file = instance(tmp_path, "db", patient_id="DB555", national=OTHER_ZHANG, study_date="20250302")
        anon, anon_file = instance(tmp_path, "anon", patient_id="HM778", study_date="20250303")
        bad, bad_file = instance(tmp_path, "bad", patient_id="DB556", national=ZHANG[:-1] + "0", study_date="20250304")
        for ae, path in (("CG_CT1", cg_file), ("HM_DR1", hm_file), ("DB_DR1", db_file), ("HM_DR1", anon_file),
                         ("DB_DR1", bad_file)):
            sent = await run(storescu, gw.port, [path], calling=ae)
            assert sent.returncode == 0, sent.output
        uids = {k: d.StudyInstanceUID for k, d in (("cg", cg), ("hm", hm), ("db", db), ("anon", anon), ("bad", bad))}

        async def indexed() -> bool:
            return all([await rt.store.get("studies", uid) for uid in uids.values()])
        await wait_for(indexed, timeout=10, what="the five studies indexed")
        # The index keeps the consortium identity; a resident ID failing its check digit makes none
        identities = {k: (await rt.store.get("studies", uid)).get("identity") for k, uid in uids.items()}
        assert identities == {"cg": f"CN_RESIDENT_ID|{ZHANG}", "hm": f"CN_RESIDENT_ID|{ZHANG}",
                              "db": f"CN_RESIDENT_ID|{OTHER_ZHANG}", "anon": "", "bad": ""}
        assert (await rt.store.get("patients", "hongmiao-thc|HM777"))["identity"] == f"CN_RESIDENT_ID|{ZHANG}"

        await api.ok("POST", "/api/v1/reading-requests", "cg-clinic", {
            "study_uid": uids["cg"], "kind": "imaging", "priority": "routine", "clinical_question": "咳嗽两周"},
            status=201)

        async def queued() -> bool:
            found = await rt.store.find("reading_requests", {"study_uid": uids["cg"]})
            return bool(found) and found[0].get("centre") == "county-imaging" and found[0]["state"] == "queued"
        await wait_for(queued, timeout=10, what="the reading request queued at county-imaging")
        priors = await api.ok("GET", f"/api/v1/studies/{uids['cg']}/priors", "dr-wang")
        # The same resident ID at two townships shares priors; the same name and birth date never does
        assert [p["id"] for p in priors["items"]] == [uids["hm"]]
        for other in ("db", "anon", "bad"):
            assert (await api.call("GET", f"/api/v1/studies/{uids[other]}", "dr-wang"))[0] == 404, other
        # Masked for the reader; whole for an admin
        masked = f"CN_RESIDENT_ID|{ZHANG[:4]}{'*' * 10}{ZHANG[-4:]}"
        assert priors["items"][0]["identity"] == masked
        assert (await api.ok("GET", f"/api/v1/studies/{uids['hm']}", "dr-wang"))["identity"] == masked
        assert (await api.ok("GET", f"/api/v1/studies/{uids['hm']}", "admin"))["identity"] == f"CN_RESIDENT_ID|{ZHANG}"
        clinic_list = await api.ok("GET", "/api/v1/studies", "cg-clinic")
        assert [s["identity"] for s in clinic_list["items"]] == [masked]

        # Name + birth date: only a suggestion, for a coordinator, which he confirms
        assert (await api.call("GET", f"/api/v1/studies/{uids['cg']}/identity-suggestions", "dr-wang"))[0] == 403
        suggested = await api.ok("GET", f"/api/v1/studies/{uids['cg']}/identity-suggestions", "coord-county")
        assert sorted((s["organization"], s["patient_id"]) for s in suggested["items"]) == [
            ("dongba-thc", "DB555"), ("dongba-thc", "DB556"), ("hongmiao-thc", "HM778")]
        assert {s["identity"] for s in suggested["items"]} == {
            "", f"CN_RESIDENT_ID|{OTHER_ZHANG[:4]}{'*' * 10}{OTHER_ZHANG[-4:]}"}
        # Two different resident IDs are never one person
        status, problem = await api.call("POST", f"/api/v1/studies/{uids['cg']}/identity-links", "coord-county",
                                         {"organization": "dongba-thc", "patient_id": "DB555"})
        assert status == 409 and "different national identifiers" in problem["detail"]
        link = await api.ok("POST", f"/api/v1/studies/{uids['cg']}/identity-links", "coord-county",
                            {"organization": "hongmiao-thc", "patient_id": "HM778", "reason": "电话核实, 同一人"},
                            status=201)
        assert (link["patient"], link["linked"], link["confirmed_by"]) == (
            "chengguan-thc|CG001", "hongmiao-thc|HM778", "coord-county")
        priors = await api.ok("GET", f"/api/v1/studies/{uids['cg']}/priors", "dr-wang")
        assert {p["id"] for p in priors["items"]} == {uids["hm"], uids["anon"]}
        assert (await api.call("GET", f"/api/v1/studies/{uids['db']}", "dr-wang"))[0] == 404
        again = await api.ok("GET", f"/api/v1/studies/{uids['cg']}/identity-suggestions", "coord-county")
        assert ("hongmiao-thc", "HM778") not in {(s["organization"], s["patient_id"]) for s in again["items"]}
        audited = await rt.store.find("audit", {"action": "identity.link"})
        assert sorted((a["actor"], a["outcome"]) for a in audited) == [("coord-county", "refused"),
                                                                       ("coord-county", "success")]

        # A mistaken confirmation is undone: priors stop following it at once, audited; a reader may not
        unlink = f"/api/v1/studies/{uids['cg']}/identity-links/hongmiao-thc/HM778"
        assert (await api.call("DELETE", unlink, "dr-wang"))[0] == 403
        undone = await api.ok("DELETE", unlink, "coord-county")
        assert (undone["patient"], undone["linked"], undone["unlinked_by"]) == (
            "chengguan-thc|CG001", "hongmiao-thc|HM778", "coord-county")
        priors = await api.ok("GET", f"/api/v1/studies/{uids['cg']}/priors", "dr-wang")
        assert {p["id"] for p in priors["items"]} == {uids["hm"]}  # the same resident ID still
        assert await rt.store.find("identity_links", {}) == []  # both directions
        assert (await api.call("DELETE", unlink, "coord-county"))[0] == 404  # nothing left to undo
        again = await api.ok("GET", f"/api/v1/studies/{uids['cg']}/identity-suggestions", "coord-county")
        assert ("hongmiao-thc", "HM778") in {(s["organization"], s["patient_id"]) for s in again["items"]}
        unlinked = await rt.store.find("audit", {"action": "identity.unlink"})
        assert [(a["actor"], a["outcome"], a["detail"]["confirmed_by"]) for a in unlinked
                if a["outcome"] == "success"] == [("coord-county", "success", "coord-county")]

        # The resident ID is in no event, no audit record and no log line
        events = json.dumps([e.event.data for e in await rt.store.read_log(0, limit=10_000)], ensure_ascii=False)
        audit = json.dumps(await rt.store.find("audit", limit=10_000), ensure_ascii=False)
        for text in (events, audit, caplog.text):
            assert ZHANG not in text and OTHER_ZHANG not in text
    finally:
        await service.stop()
        await workflow.stop()
        await rt.bus.stop()
