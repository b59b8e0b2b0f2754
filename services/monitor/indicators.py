"""The consortium's indicators (统计分析) over a period, from projected rows.  No I/O.

Definitions (docs/figures.md).  A period is a local month (``2026-11``) or year (``2026``) of
the consortium's zone; a row falls in it by the local month of its instant:

* **readings**: signed remote readings (not addenda, not escalated-from copies) by site and kind,
  by the signature's month; **consultations**: concluded remote consultations by site.
* **turnaround** by priority: queued → signed, p50 / p90 (nearest rank), on time = signed at or
  before the deadline; share on time = on time / signed.
* **critical**: signed readings with a critical finding (危急值); time to acknowledgement =
  acknowledged − signed (p50 / p90); unacknowledged = none yet.
* **quality**: the latest grade per reading by grading month, per site × modality × technician
  (each of the study's Operators' Name; ``""`` when none was sent): 甲片率 = A / graded,
  废片率 = reject / graded (grade ``reject``, or the event's ``reject`` flag on a consortium's own scale).
* **peer_review** per original reader and centre, by sampling month: sampled, scored,
  agreement = score 1 / scored, minor = score 2, significant = score 3, clinically significant,
  upheld after arbitration.
* **coverage**: townships (and, separately, village clinics) that asked for at least one remote
  reading (queued in the period, the workflow's clock) or consultation (requested in it) / all
  of that level in the consortium file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .figures import percentile

Doc = dict[str, Any]
InPeriod = Callable[[str | None], bool]  # is this UTC instant in the period?
GRADES = ("A", "B", "C", "reject")
REQUESTED_BY_SITE = ("clinic", "site_rule", "order")


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _seconds(a: str, b: str) -> float:
    from .readmodel import parse_time
    return round(parse_time(b) - parse_time(a), 3)


def readings(rows: Iterable[Doc], consultations: Iterable[Doc], in_period: InPeriod,
             sites: Sequence[Doc]) -> list[Doc]:
    """Per site: signed remote readings by kind, concluded consultations."""
    out = {s["organization"]: {**s, "imaging": 0, "ecg": 0, "readings": 0, "consultations": 0} for s in sites}

    def line(org: str) -> Doc:
        return out.setdefault(org, {"organization": org, "name": org, "level": None, "imaging": 0, "ecg": 0,
                                    "readings": 0, "consultations": 0})
    for r in rows:
        if r.get("state") == "signed" and in_period(r.get("signed_at")):
            entry = line(r["organization"])
            entry[r["kind"]] = entry.get(r["kind"], 0) + 1
            entry["readings"] += 1
    for c in consultations:
        if c.get("concluded_at") and in_period(c["concluded_at"]):
            line(c["organization"])["consultations"] += 1
    return list(out.values())


def turnaround(rows: Iterable[Doc], in_period: InPeriod, priorities: Sequence[str]) -> list[Doc]:
    """Per priority: signed readings, p50 / p90 of queued → signed, on time and its share."""
    values: dict[str, list[float]] = {p: [] for p in priorities}
    on_time: dict[str, int] = dict.fromkeys(priorities, 0)
    for r in rows:
        if r.get("state") != "signed" or not in_period(r.get("signed_at")) or r.get("turnaround_seconds") is None:
            continue
        p = r["priority"]
        values.setdefault(p, []).append(r["turnaround_seconds"])
        on_time[p] = on_time.get(p, 0) + bool(r.get("deadline") and r["signed_at"] <= r["deadline"])
    return [{"priority": p, "count": len(v), "p50_seconds": percentile(v, 0.5), "p90_seconds": percentile(v, 0.9),
             "on_time": on_time[p], "on_time_share": _rate(on_time[p], len(v))} for p, v in values.items()]


def critical(results: Iterable[Doc], in_period: InPeriod) -> Doc:
    """Critical findings of signed readings (addenda excluded) and their time to acknowledgement."""
    waits, count, unacknowledged = [], 0, 0
    for r in results:
        if not r.get("critical") or r.get("addendum_of") or not in_period(r.get("signed_at")):
            continue
        count += 1
        if r.get("acknowledged_at"):
            waits.append(max(0.0, _seconds(r["signed_at"], r["acknowledged_at"])))
        else:
            unacknowledged += 1
    return {"count": count, "acknowledged": len(waits), "unacknowledged": unacknowledged,
            "p50_ack_seconds": percentile(waits, 0.5), "p90_ack_seconds": percentile(waits, 0.9)}


def quality(gradings: Iterable[Doc], in_period: InPeriod) -> list[Doc]:
    """Per site × modality × technician: graded, each grade, 甲片率 and 废片率, reasons, comments."""
    cells: dict[tuple[str, str, str], Doc] = {}
    for g in gradings:
        if not in_period(g.get("graded_at")):
            continue
        for operator in g.get("operators") or [""]:
            key = (g["organization"], g.get("modality") or "", operator)
            cell = cells.setdefault(key, {"organization": key[0], "modality": key[1], "technician": key[2],
                                          "graded": 0, **dict.fromkeys(GRADES, 0), "other": 0, "reasons": {},
                                          "comments": []})
            cell["graded"] += 1
            grade = "reject" if g.get("reject") else g["grade"]
            cell[grade if grade in GRADES else "other"] += 1
            for reason in g.get("reasons") or []:
                cell["reasons"][reason] = cell["reasons"].get(reason, 0) + 1
            if g.get("comment"):
                cell["comments"].append({"reading_id": g["id"], "grade": g["grade"], "comment": g["comment"],
                                         "reader": g.get("reader"), "graded_at": g["graded_at"]})
    for cell in cells.values():
        cell["a_rate"] = _rate(cell["A"], cell["graded"])
        cell["reject_rate"] = _rate(cell["reject"], cell["graded"])
    return [cells[k] for k in sorted(cells)]


def peer_review(reviews: Iterable[Doc], in_period: InPeriod) -> list[Doc]:
    """Per original reader and centre: sample size, agreement rate, discrepancies, upheld."""
    cells: dict[tuple[str, str], Doc] = {}
    for r in reviews:
        if not in_period(r.get("sampled_at") or r.get("scored_at")):
            continue
        key = (r.get("original_reader") or "", r.get("original_centre") or "")
        cell = cells.setdefault(key, {"reader": key[0], "centre": key[1], "sampled": 0, "scored": 0, "agree": 0,
                                      "minor": 0, "significant": 0, "clinically_significant": 0, "upheld": 0})
        cell["sampled"] += 1
        if r.get("score") is not None:
            cell["scored"] += 1
            cell[{1: "agree", 2: "minor", 3: "significant"}[r["score"]]] += 1
            cell["clinically_significant"] += bool(r.get("clinically_significant"))
        cell["upheld"] += bool(r.get("upheld"))
    for cell in cells.values():
        cell["agreement_rate"] = _rate(cell["agree"], cell["scored"])
    return [cells[k] for k in sorted(cells)]


def coverage(rows: Iterable[Doc], consultations: Iterable[Doc], in_period: InPeriod,
             levels: dict[str, str]) -> Doc:
    """Share of townships and of village clinics that used the remote services in the period."""
    used = {r["organization"] for r in rows
            if r.get("source") in REQUESTED_BY_SITE and in_period(r.get("queued_at"))}
    used |= {c["organization"] for c in consultations if in_period(c.get("requested_at"))}
    out = {}
    for level in ("township", "village"):
        members = sorted(o for o, lv in levels.items() if lv == level)
        served = [o for o in members if o in used]
        out[level] = {"total": len(members), "served": len(served), "share": _rate(len(served), len(members)),
                      "served_ids": served, "not_served_ids": [o for o in members if o not in used]}
    return out
