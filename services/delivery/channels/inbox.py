"""The inbox channel: the result is in the clinic's list the moment it is recorded.

Nothing leaves the building, so it never fails: the delivery is written as delivered in
the transaction that records the result, and its ``result.delivered`` event (carrying the
summary below) is what the API's live stream pushes to the clinic's screens.
"""

from __future__ import annotations

from typing import Any

from ...core.localtime import LocalTime

SUMMARY = ("study_uid", "patient_id", "patient_name", "accession_number", "kind", "source", "reader_name",
           "signed_at", "critical", "critical_category", "consultation_id", "addendum_of",
           "return_reason_code", "return_comment")  # the last two: a re-scan notice (source "returned")


def summary(result: dict[str, Any], local: LocalTime) -> dict[str, Any]:
    """What a clinic screen lists; ``signed_at_local`` is what it shows a person."""
    return {**{k: result.get(k) for k in SUMMARY}, "signed_at_local": local.for_people(result["signed_at"])}
