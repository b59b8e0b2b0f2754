"""Results and their deliveries as documents; I/O free.

A *result* is what goes back to the clinic that asked: a signed report, an addendum, or a
consultation's concluded opinion.  Each result has one *delivery* per channel (``dicom``,
``inbox``, ``webhook``).  The DICOM SOP Instance UIDs and the webhook idempotency key are
fixed here, when the records are created, so a retry never makes a second result at the clinic.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydicom.uid import generate_uid

from ..core.consortium import Consortium

Doc = dict[str, Any]

CHANNELS = ("dicom", "inbox", "webhook", "document", "edge")
# pending: waiting for its next attempt; delivering: a worker holds the lease;
# delivered: done; dead: past the horizon or hopeless, waiting for a coordinator's re-drive.
STATES = ("pending", "delivering", "delivered", "dead")


def uid_for(result_id: str, what: str) -> str:
    """Deterministic DICOM UID: the same result always gets the same SR/PDF/series UIDs."""
    return generate_uid(entropy_srcs=[result_id, what])


def delivery_id(result_id: str, channel: str) -> str:
    return "dl-" + hashlib.sha256(f"{result_id}|{channel}".encode()).hexdigest()[:20]


def _signer_names(signers: Any) -> str:
    names = []
    for s in signers or []:
        if isinstance(s, dict):
            names.append(str(s.get("name") or s.get("id") or ""))
        else:
            names.append(str(s))
    return "、".join(n for n in names if n)


def _signers(signers: Any) -> list[Doc]:
    """Each person who signs, on his own: ``{"id", "name", "centre"}`` (and his ``role`` in a
    two-level sign-off: ``reporting`` 报告医生 / ``reviewing`` 审核医生)."""
    out = []
    for s in signers or []:
        if isinstance(s, dict):
            out.append({"id": s.get("id"), "name": str(s.get("name") or s.get("id") or ""),
                        "centre": s.get("centre"), **({"role": s["role"]} if s.get("role") else {})})
        else:
            out.append({"id": None, "name": str(s), "centre": None})
    return [s for s in out if s["name"]]


REQUESTER = ("requesting_department", "requesting_physician")


def result_from_report(data: Doc, *, at: str) -> Doc:
    """A result from ``report.signed`` data (a report or an addendum)."""
    rid = data["report_id"]
    reader_name = data.get("reader_name") or data.get("reader_id") or ""
    # Two-level sign-off: 报告医生 then 审核医生, each a Verifying Observer; older events name one reader.
    signers = data.get("signers") or [{"id": data.get("reader_id"), "name": reader_name, "centre": data.get("centre")}]
    result = _result(rid, kind=data["kind"], source="addendum" if data.get("addendum_of") else "report",
                   data=data, at=at, reader_name=reader_name, signers=_signers(signers),
                   findings=data.get("findings") or "", impression=data.get("impression") or "",
                   study_uids=[data["study_uid"]], consultation_id=None)
    result["reviewer_name"] = data.get("reviewer_name")
    result["report_version"] = data.get("version") or 1  # the version released: the SR and the signed PDF name it
    result["structured"] = data.get("structured") or []  # the template's fields, coded item by item in the SR
    # For the PDF (docs/reports.md, "The report document"): the question asked, the modality, the template.
    result.update(clinical_question=data.get("clinical_question"), modality=data.get("modality"),
                  template_id=data.get("template_id"), template_version=data.get("template_version"))
    # Who asked (申请科室 / 申请医生) and the record class: the reading request's, from the order or the study.
    result.update({k: data.get(k) for k in REQUESTER + ("record_class",)})
    return result


def result_from_consultation(data: Doc, *, at: str) -> Doc:
    """A result from ``consultation.concluded`` (the specialists' signed opinion)."""
    cid = data["consultation_id"]
    rid = data.get("opinion_id") or f"cr-{cid}"
    data = {**data, "reader_id": data.get("lead")}
    return _result(rid, kind="consultation", source="consultation", data=data, at=at,
                   reader_name=_signer_names(data.get("signers")), signers=_signers(data.get("signers")),
                   findings=data.get("assessment") or "",
                   impression=_recommendations_text(data.get("recommendations")),
                   study_uids=list(data.get("study_uids") or []),
                   consultation_id=cid)


def result_from_return(data: Doc, *, at: str, returned_at: str, reader_name: str) -> Doc:
    """A notice from ``reading.returned``: the clinic must re-scan (no report, no DICOM object).

    It goes through the inbox and the webhook like a result, as ``source: "returned"`` with the
    reason, so the clinic learns at once; ``signed_at`` is when it was returned (the inbox's order).
    """
    rid = f"rs-{data['request_id']}"
    result = _result(rid, kind=data["kind"], source="returned",
                     data={**data, "critical": False, "signed_at": returned_at}, at=at, reader_name=reader_name,
                     signers=_signers([{"id": data.get("reader_id"), "name": reader_name,
                                        "centre": data.get("centre")}]),
                     findings="", impression="", study_uids=[data["study_uid"]], consultation_id=None)
    result.update(returned_at=returned_at, return_reason_code=data["reason_code"],
                  return_comment=data.get("comment") or "")
    return result


def _recommendations_text(recommendations: Any) -> str:
    """consultation.concluded carries recommendations as an object with a readable ``text``."""
    if isinstance(recommendations, dict):
        return recommendations.get("text") or ""
    return recommendations or ""


def _result(rid: str, *, kind: str, source: str, data: Doc, at: str, reader_name: str, signers: list[Doc],
            findings: str, impression: str, study_uids: list[str], consultation_id: str | None) -> Doc:
    critical = bool(data.get("critical"))
    return {
        "id": rid, "source": source, "kind": kind, "organization": data["organization"],
        "centre": data.get("centre"), "request_id": data.get("request_id"), "report_id": data.get("report_id"),
        "consultation_id": consultation_id, "addendum_of": data.get("addendum_of"),
        "study_uid": study_uids[0] if study_uids else None, "study_uids": study_uids,
        "patient_id": data.get("patient_id"), "patient_name": data.get("patient_name"),
        "accession_number": data.get("accession_number"), "reader_id": data.get("reader_id"),
        "reader_name": reader_name, "signers": signers, "signed_at": data["signed_at"], "findings": findings,
        "impression": impression, "critical": critical,
        "critical_category": data.get("critical_category") if critical else None,
        "priority": data.get("priority"), "created_at": at,
        "report_version": 1,  # a report's: the version released (result_from_report)
        "sr_sop_instance_uid": uid_for(rid, "sr"), "sr_series_uid": uid_for(rid, "sr-series"),
        "pdf_sop_instance_uid": uid_for(rid, "pdf"), "pdf_series_uid": uid_for(rid, "pdf-series"),
        "acknowledged_at": None, "acknowledged_by": None, "acknowledgement": None,
        # 危急值: a person must acknowledge by ack_due_at, else escalation (critical.py)
        "ack_due_at": None, "escalated": False, "escalations": 0, "version": 0,
    }


def verifying_observers(consortium: Consortium, result: Doc, *, default_organization: str) -> list[tuple[str, str]]:
    """``(name, organisation)`` of every person who signed, each with his own organisation
    (his centre's name, else his organisation's): one Verifying Observer each (PS3.3 C.17.2).
    A result recorded before ``signers`` existed has its one ``reader_name``."""
    out = []
    for s in result.get("signers") or []:
        user = consortium.users.get(s.get("id") or "")
        centre = consortium.centres.get(s.get("centre") or (user.centre if user else None) or "")
        org = consortium.organizations.get(user.organization) if user else None
        out.append((s["name"], centre.name if centre else org.name if org else default_organization))
    if not out and result.get("reader_name"):
        out.append((result["reader_name"], default_organization))
    return out


def channels_for(consortium: Consortium, result: Doc, *, study_known: bool) -> dict[str, Doc]:
    """The channels the origin organisation's configuration gives it, with their targets.

    The inbox is always there.  DICOM (or ``edge``: the same SR and PDF, stored at the terminal by
    the clinic's edge, when its ``scp`` is ``via_edge``) needs the clinic's SCP and a study in the index to
    attach the SR to (a re-scan notice has no SR); webhook needs a configured URL.  A clinic
    without an SCP gets a report's signed PDF made and kept (``document``), for
    ``GET /api/v1/reports/{id}/document``: with an SCP it is made for the DICOM delivery.
    """
    org = consortium.organizations.get(result["organization"])
    out: dict[str, Doc] = {"inbox": {"organization": result["organization"]}}
    if org is not None and org.scp is not None and study_known and result["source"] != "returned":
        terminal = {"ae_title": org.scp.ae_title, "host": org.scp.host, "port": org.scp.port, "tls": org.scp.tls}
        # A terminal on the clinic's LAN behind its edge: the edge fetches the SR and PDF and stores them there.
        out["edge" if org.scp.via_edge else "dicom"] = terminal
    elif org is not None and org.scp is None and result.get("report_id") and result["source"] != "returned":
        out["document"] = {"organization": result["organization"]}
    if org is not None and org.webhook is not None:
        out["webhook"] = {"url": org.webhook.url, "secret_env": org.webhook.secret_env}
    return out


def new_delivery(result: Doc, channel: str, target: Doc, *, at: str) -> Doc:
    did = delivery_id(result["id"], channel)
    return {
        "id": did, "result_id": result["id"], "channel": channel, "organization": result["organization"],
        "centre": result.get("centre"), "critical": result["critical"], "target": target,
        "state": "pending", "attempts": 0, "created_at": at, "started_at": at, "next_attempt_at": at,
        "lease_expires_at": None, "worker": None, "last_error": None, "delivered_at": None,
        "dead_at": None, "reason": None, "sent": [],  # SOP Instance UIDs the clinic's SCP accepted
        "idempotency_key": did, "redrives": 0, "history": [], "version": 0,
    }


def public_result(doc: Doc, deliveries: list[Doc] | None = None) -> Doc:
    """What the API shows of a result."""
    out = {k: v for k, v in doc.items() if k != "version"}
    if deliveries is not None:
        out["deliveries"] = [public_delivery(d) for d in sorted(deliveries, key=lambda d: d["channel"])]
    return out


def public_delivery(d: Doc) -> Doc:
    return {k: d.get(k) for k in ("id", "result_id", "channel", "organization", "centre", "critical", "target",
                                  "state", "attempts", "created_at", "next_attempt_at", "delivered_at",
                                  "dead_at", "reason", "last_error", "redrives", "history")}
