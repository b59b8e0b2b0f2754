"""A township study goes in with DCMTK storescu, a reader signs through the API, and the clinic's
terminal (DCMTK storescp) receives the Basic Text SR and the encapsulated PDF of the report."""

from __future__ import annotations

import io

import pypdf
from pydicom import dcmread

from services.delivery.model import uid_for

from ..support import wait_for

FINDINGS = "右下肺见斑片状高密度影，边缘模糊。"
IMPRESSION = "右下肺炎，建议抗感染治疗后复查。"


def content(ds, meaning: str):
    """The first content item (depth-first) whose concept name has ``meaning``."""
    for item in ds.ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeMeaning == meaning:
            return item
        if "ContentSequence" in item:
            found = content(item, meaning)
            if found is not None:
                return found
    return None


async def test_signed_report_reaches_the_clinic_terminal_as_sr_and_pdf(make_yilian, clinic_scp,
                                                                     webhook_receiver):
    clinic_scp.start()
    y = await make_yilian(scp_port=clinic_scp.port, webhook_port=webhook_receiver.port)
    study_uid = await y.send_study(patient_name="张^三", patient_id="CG-0001", charset="GB18030")
    signed = await y.sign(study_uid, findings=FINDINGS, impression=IMPRESSION)
    report_id = signed["report_id"]

    await y.delivered(report_id)  # the SR and the PDF are at the clinic's storescp
    assert len(clinic_scp.files()) == 2
    by_class = {}
    for path in clinic_scp.files():
        ds = dcmread(path)
        by_class[ds.SOPClassUID] = ds
    sr = by_class["1.2.840.10008.5.1.4.1.1.88.11"]
    doc = by_class["1.2.840.10008.5.1.4.1.1.104.1"]

    # the SR: same study, new series, fixed UID, verified and complete, UTF-8
    assert sr.SpecificCharacterSet == "ISO_IR 192"
    assert sr.StudyInstanceUID == study_uid == doc.StudyInstanceUID
    assert sr.SOPInstanceUID == uid_for(report_id, "sr")
    study_series = {s["id"] for s in await y.rt.store.find("series", {"study_uid": study_uid})}
    assert sr.SeriesInstanceUID not in study_series and len(study_series) == 2
    assert (sr.VerificationFlag, sr.CompletionFlag, sr.Modality) == ("VERIFIED", "COMPLETE", "SR")
    assert str(sr.PatientName) == "张^三" and sr.PatientID == "CG-0001"
    assert str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "王建国"
    assert content(sr, "Finding").TextValue == FINDINGS
    assert content(sr, "Impression").TextValue == IMPRESSION
    assert content(sr, "Critical finding").ConceptCodeSequence[0].CodeMeaning == "No"
    assert str(content(sr, "Person Observer Name").PersonName) == "王建国"
    # evidence: every series and instance of the original study, from the index
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == study_uid
    referenced = {(s.SeriesInstanceUID, r.ReferencedSOPInstanceUID)
                  for s in evidence.ReferencedSeriesSequence for r in s.ReferencedSOPSequence}
    indexed = {(i["series_uid"], i["id"]) for i in await y.rt.store.find("instances", {"study_uid": study_uid})}
    assert referenced == indexed and len(indexed) == 4

    # the PDF: same report, Chinese text intact
    assert doc.MIMETypeOfEncapsulatedDocument == "application/pdf"
    pdf_bytes = bytes(doc.EncapsulatedDocument)[:doc.EncapsulatedDocumentLength]
    text = pypdf.PdfReader(io.BytesIO(pdf_bytes)).pages[0].extract_text()
    for expected in ("医学影像诊断报告", "张三", FINDINGS, IMPRESSION, "王建国", "城关镇卫生院"):
        assert expected in text, (expected, text)

    # every channel delivered once; a routine result stored at the SCP is acknowledged automatically
    async def all_delivered() -> bool:
        return {c: d["state"] for c, d in (await y.deliveries(report_id)).items()} == \
            {"dicom": "delivered", "inbox": "delivered", "webhook": "delivered"}
    await wait_for(all_delivered, timeout=20, what="every channel delivered")
    delivered = await y.events("result.delivered")
    assert sorted(e["data"]["channel"] for e in delivered) == ["dicom", "inbox", "webhook"]
    result = await y.ok("GET", f"/api/v1/results/{report_id}", "cg-clinic")
    assert result["acknowledgement"]["mode"] == "dicom_store"
    assert [e["data"]["mode"] for e in await y.events("result.acknowledged")] == ["dicom_store"]
    assert [r["result_id"] for r in webhook_receiver.applied()] == [report_id]


async def test_addendum_and_consultation_opinion_are_delivered_too(make_yilian, clinic_scp):
    from pydicom import dcmread

    from services.core.events import Event
    clinic_scp.start()
    y = await make_yilian(scp_port=clinic_scp.port)
    study_uid = await y.send_study()
    report_id = (await y.sign(study_uid))["report_id"]
    await y.delivered(report_id)

    addendum = await y.ok("POST", f"/api/v1/reports/{report_id}/addenda", "dr-wang",
                          {"text": "补充：右肺门影增浓，建议CT复查。"}, status=201)
    await y.delivered(addendum["id"])
    assert len(clinic_scp.files()) == 4
    srs = [dcmread(f) for f in clinic_scp.files()]
    srs = {ds.SOPInstanceUID: ds for ds in srs if ds.Modality == "SR"}
    added = srs[uid_for(addendum["id"], "sr")]
    assert added.StudyInstanceUID == study_uid
    assert added.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0] \
        .ReferencedSOPInstanceUID == uid_for(report_id, "sr")
    assert content(added, "Finding").TextValue == "补充：右肺门影增浓，建议CT复查。"

    # a consultation's signed opinion (another service emits it) reaches the clinic the same way
    await y.rt.bus.publish(Event("consultation.concluded", subject="cs-1", source="/yilian/workflow", data={
        "consultation_id": "cs-1", "organization": "chengguan-thc", "centre": "county-imaging", "state": "concluded",
        "actor": "dr-wang", "urgency": "routine", "requested_at": "2026-11-23T09:00:00.000Z", "opinion_id": "op-1",
        "study_uids": [study_uid], "patient_id": "P001", "patient_name": "TEST^PATIENT",
        "signed_at": "2026-11-23T10:00:00.000Z", "signers": [{"id": "dr-wang", "name": "王建国"}],
        "assessment": "考虑社区获得性肺炎", "critical": False, "lead": "dr-wang",
        "recommendations": {"disposition": "manage_locally", "text": "门诊抗感染治疗，一周后复诊"}}))
    await y.delivered("op-1")
    assert len(clinic_scp.files()) == 6
    inbox = (await y.ok("GET", "/api/v1/results", "cg-clinic"))["items"]
    assert {r["id"]: r["source"] for r in inbox} == {report_id: "report", addendum["id"]: "addendum",
                                                     "op-1": "consultation"}
    opinion = await y.ok("GET", "/api/v1/results/op-1", "cg-clinic")
    assert opinion["consultation_id"] == "cs-1" and opinion["impression"] == "门诊抗感染治疗，一周后复诊"
