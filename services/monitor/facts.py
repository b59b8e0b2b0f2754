"""The figures' and settlement's projection: what each event adds to them.  No I/O.

Beside the monitor's read model (``readmodel.py``: readings, results), the consortium's figures
need consultations, image-quality gradings and peer reviews, and settlement a ledger.  Like
``readmodel``, :func:`keys` names the documents an event touches and :func:`apply` returns the
ones to write, so a replay of the log rebuilds them (``service.apply_in`` runs both).

Collections (``services/core/store/schema.py``):

* ``figures_consultations`` — one per consultation: origin, centre, requested, concluded;
* ``figures_gradings`` — one per reading: its latest image-quality grade (``study.quality_graded``);
* ``figures_reviews`` — one per peer review: sampled, scored, arbitrated;
* ``settlement_ledger`` — one entry per released report, addendum, concluded consultation or void;
* ``settlement_months`` — one per closed month, with its statement frozen at the close.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from typing import Any

from ..core.consortium import Consortium
from ..core.events import Event

Doc = dict[str, Any]
Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Calendar:
    """The consortium's months and days: a UTC instant's local month (``YYYY-MM``) and date."""

    tz: tzinfo

    def local(self, at: str) -> datetime:
        return datetime.fromisoformat(at.replace("Z", "+00:00")).astimezone(self.tz)

    def month(self, at: str) -> str:
        return self.local(at).strftime("%Y-%m")

    def day(self, at: str) -> date:
        return self.local(at).date()


CONSULTATIONS, GRADINGS, REVIEWS = "figures_consultations", "figures_gradings", "figures_reviews"
LEDGER, MONTHS = "settlement_ledger", "settlement_months"

CONSULTATION_TYPES = ("consultation.requested", "consultation.concluded", "consultation.cancelled",
                      "consultation.withdrawn", "consultation.no_show")
QUALITY_TYPES = ("study.quality_graded",)
REVIEW_TYPES = ("peer_review.sampled", "peer_review.scored", "peer_review.arbitrated")
SETTLEMENT_TYPES = ("settlement.month_closed", "settlement.entry_voided")
TYPES = (*CONSULTATION_TYPES, *QUALITY_TYPES, *REVIEW_TYPES, *SETTLEMENT_TYPES, "report.signed")


def next_month(month: str) -> str:
    year, mon = int(month[:4]), int(month[5:7])
    return f"{year + mon // 12}-{mon % 12 + 1:02d}"


def posting_month(month: str, closed: set[str]) -> str:
    """A closed month is immutable: what belongs to it goes to the first open month after it."""
    while month in closed:
        month = next_month(month)
    return month


def keys(event: Event) -> list[Key]:
    data, t = event.data, event.type
    if t in CONSULTATION_TYPES:
        keys_ = [(CONSULTATIONS, data["consultation_id"])]
        return keys_ + ([(LEDGER, f"consultation:{data['opinion_id']}")] if t == "consultation.concluded" else [])
    if t in QUALITY_TYPES:
        return [(GRADINGS, data["reading_id"])]
    if t in REVIEW_TYPES:
        return [(REVIEWS, data["review_id"])]
    if t == "report.signed":
        keys_ = [(LEDGER, f"report:{data['report_id']}")]
        return keys_ + ([(LEDGER, f"report:{data['addendum_of']}")] if data.get("addendum_of") else [])
    if t == "settlement.entry_voided":
        return [(LEDGER, data["entry_id"]), (LEDGER, f"void:{data['entry_id']}")]
    if t == "settlement.month_closed":
        return [(MONTHS, data["month"])]
    return []


def apply(event: Event, docs: dict[Key, Doc | None], consortium: Consortium, cal: Calendar,
          closed: set[str], month_entries: list[Doc] | None = None) -> list[tuple[str, Doc]]:
    """The documents to write.  ``closed``: the months closed so far; ``month_entries``: for
    ``settlement.month_closed``, the entries posted to that month (its statement is frozen from them)."""
    data, t = event.data, event.type
    if t in CONSULTATION_TYPES:
        out = [(CONSULTATIONS, _consultation(event, docs.get((CONSULTATIONS, data["consultation_id"]))))]
        key = (LEDGER, f"consultation:{data['opinion_id']}") if t == "consultation.concluded" else None
        if key and docs.get(key) is None:
            out.append((LEDGER, _consultation_entry(event, consortium, cal, closed)))
        return out
    if t in QUALITY_TYPES:
        current = docs.get((GRADINGS, data["reading_id"]))
        if current and current["graded_at"] > data["graded_at"]:
            return []  # an older grade arriving late: the latest per reading counts
        return [(GRADINGS, _grading(event, current))]
    if t in REVIEW_TYPES:
        return [(REVIEWS, _review(event, docs.get((REVIEWS, data["review_id"]))))]
    if t == "report.signed":
        key = (LEDGER, f"report:{data['report_id']}")
        if docs.get(key) is not None:
            return []  # one entry per report, whatever redelivers it
        original = docs.get((LEDGER, f"report:{data['addendum_of']}")) if data.get("addendum_of") else None
        return [(LEDGER, _report_entry(event, original, consortium, cal, closed))]
    if t == "settlement.entry_voided":
        entry, void_key = docs.get((LEDGER, data["entry_id"])), (LEDGER, f"void:{data['entry_id']}")
        if entry is None or docs.get(void_key) is not None or entry["type"] == "void":
            return []
        return [(LEDGER, _void(event, entry, cal, closed)), (LEDGER, {**entry, "voided_by": void_key[1]})]
    if t == "settlement.month_closed":
        if docs.get((MONTHS, data["month"])) is not None:
            return []
        return [(MONTHS, close(data, month_entries or []))]
    return []


def _consultation(event: Event, row: Doc | None) -> Doc:
    data = event.data
    row = dict(row or {"id": data["consultation_id"], "requested_at": data.get("requested_at"),
                       "concluded_at": None, "opinion_id": None})
    row.update(organization=data["organization"], centre=data.get("centre"), state=data["state"],
               urgency=data.get("urgency"), specialty=data.get("specialty"),
               requested_at=row.get("requested_at") or data.get("requested_at"))
    if event.type == "consultation.concluded":
        row.update(concluded_at=data["signed_at"], opinion_id=data["opinion_id"], lead=data.get("lead"))
    return row


def _grading(event: Event, row: Doc | None) -> Doc:
    data = event.data
    return {"id": data["reading_id"], "study_uid": data.get("study_instance_uid"),
            "organization": data["organization"], "modality": data.get("modality") or "",
            "operators": list(data.get("operators") or []), "grade": data["grade"],
            # a consortium's own scale names its 废片 grade by the flag, not the code
            "reject": bool(data.get("reject")) or data["grade"] == "reject", "label": data.get("label"),
            "reasons": list(data.get("reasons") or []), "comment": data.get("comment"),
            "reader": data.get("reader"), "centre": data.get("centre"), "graded_at": data["graded_at"],
            "grades": (row or {}).get("grades", 0) + 1}


def _review(event: Event, row: Doc | None) -> Doc:
    data, t = event.data, event.type
    row = dict(row or {"id": data["review_id"], "sampled_at": None, "scored_at": None, "score": None,
                       "clinically_significant": None, "arbitrated_at": None, "upheld": None})
    if t == "peer_review.sampled":
        row.update(report_id=data.get("report_id"), reading_id=data.get("reading_id"),
                   original_reader=data.get("original_reader"), original_centre=data.get("original_centre"),
                   reason=data.get("reason"), sampled_at=data.get("sampled_at"),
                   reviewer=data.get("reviewer") or row.get("reviewer"))
    elif t == "peer_review.scored":
        row.update(report_id=data.get("report_id"), original_reader=data.get("original_reader"),
                   original_centre=data.get("original_centre"), reviewer=data.get("reviewer"),
                   reviewer_centre=data.get("reviewer_centre"), score=data["score"],
                   clinically_significant=bool(data.get("clinically_significant")), scored_at=data["scored_at"])
    else:
        row.update(upheld=bool(data["upheld"]), arbitrated_at=data.get("arbitrated_at"), lead=data.get("lead"))
    return row


# --- settlement ----------------------------------------------------------------------------

def _institution(consortium: Consortium, centre: str | None, fallback: str | None = None) -> str | None:
    info = consortium.centres.get(centre or "")
    return info.organization if info else fallback


def _priced(consortium: Consortium, service: str, modality: str | None, local_day: date) -> Doc:
    fee = consortium.settlement.fee_for(service, modality, local_day)
    if fee is None:
        return {"fee_id": None, "fee_fen": 0, "reading_fen": 0, "requesting_fen": 0, "unpriced": True}
    reading, requesting = fee.split()
    return {"fee_id": fee.id, "fee_fen": fee.fee_fen, "reading_fen": reading, "requesting_fen": requesting,
            "unpriced": False}


def _entry(base: Doc, released_at: str, cal: Calendar, closed: set[str], event: Event) -> Doc:
    month = cal.month(released_at)
    posted = posting_month(month, closed)
    return {**base, "released_at": released_at, "month": month, "posted_month": posted, "late": posted != month,
            "event_id": event.id, "voided_by": None}


def _report_entry(event: Event, original: Doc | None, consortium: Consortium, cal: Calendar,
                  closed: set[str]) -> Doc:
    data = event.data
    addendum = bool(data.get("addendum_of"))
    service = "addendum" if addendum else data["kind"]
    modality = data.get("modality") or ("ECG" if data["kind"] == "ecg" else None)
    base = {"id": f"report:{data['report_id']}", "type": "addendum" if addendum else "charge", "source": "report",
            "report_id": data["report_id"], "request_id": data["request_id"], "study_uid": data.get("study_uid"),
            "service": service, "kind": data["kind"], "modality": modality, "priority": data.get("priority"),
            "requesting": data["organization"], "centre": data["centre"],
            "reading": _institution(consortium, data["centre"]), "reader_id": data.get("reader_id"),
            "addendum_of": f"report:{data['addendum_of']}" if addendum else None,
            "original_missing": addendum and original is None,
            **_priced(consortium, service, modality, cal.day(data["signed_at"]))}
    return _entry(base, data["signed_at"], cal, closed, event)


def _consultation_entry(event: Event, consortium: Consortium, cal: Calendar, closed: set[str]) -> Doc:
    data = event.data
    lead = consortium.users.get(data.get("lead") or "")
    centre = data.get("centre") or (lead.centre if lead else None)
    base = {"id": f"consultation:{data['opinion_id']}", "type": "charge", "source": "consultation",
            "consultation_id": data["consultation_id"], "opinion_id": data["opinion_id"], "report_id": None,
            "service": "consultation", "kind": "consultation", "modality": None, "priority": data.get("urgency"),
            "requesting": data["organization"], "centre": centre,
            "reading": _institution(consortium, centre, lead.organization if lead else None),
            "reader_id": data.get("lead"), "addendum_of": None,
            **_priced(consortium, "consultation", None, cal.day(data["signed_at"]))}
    return _entry(base, data["signed_at"], cal, closed, event)


def _void(event: Event, entry: Doc, cal: Calendar, closed: set[str]) -> Doc:
    """A cancellation: the entry's reversal, posted to the month it was voided in (or the next open one)."""
    data = event.data
    reversal = {k: entry.get(k) for k in ("source", "report_id", "request_id", "consultation_id", "opinion_id",
                                          "service", "kind", "modality", "priority", "requesting", "centre",
                                          "reading", "reader_id", "fee_id", "unpriced")}
    base = {**reversal, "id": f"void:{entry['id']}", "type": "void", "voids": entry["id"],
            "addendum_of": None, "reason": data.get("reason"), "actor": data.get("actor"),
            "fee_fen": -entry["fee_fen"], "reading_fen": -entry["reading_fen"],
            "requesting_fen": -entry["requesting_fen"]}
    return _entry(base, data["voided_at"], cal, closed, event)


def statement(entries: list[Doc]) -> list[Doc]:
    """Per institution pair (requesting → reading): entries, fees, and who gets what, fen."""
    lines: dict[tuple[str, str], Doc] = {}
    for e in entries:
        pair = (e.get("requesting") or "", e.get("reading") or "")
        line = lines.setdefault(pair, {"requesting": pair[0], "reading": pair[1], "entries": 0, "charges": 0,
                                       "addenda": 0, "voids": 0, "late": 0, "unpriced": 0, "fee_fen": 0,
                                       "reading_fen": 0, "requesting_fen": 0, "by_service": {}})
        line["entries"] += 1
        line[{"charge": "charges", "addendum": "addenda", "void": "voids"}[e["type"]]] += 1
        line["late"] += bool(e.get("late"))
        line["unpriced"] += bool(e.get("unpriced"))
        for k in ("fee_fen", "reading_fen", "requesting_fen"):
            line[k] += e[k]
        service = line["by_service"].setdefault(e["service"], {"entries": 0, "fee_fen": 0})
        service["entries"] += 1
        service["fee_fen"] += e["fee_fen"]
    return [lines[k] for k in sorted(lines)]


def close(data: Doc, entries: list[Doc]) -> Doc:
    """A closed month: its statement frozen from the entries posted to it when the close was applied."""
    return {"id": data["month"], "month": data["month"], "closed": True, "closed_at": data["closed_at"],
            "closed_by": data.get("actor"), "entry_ids": sorted(e["id"] for e in entries),
            "statement": statement(entries)}
