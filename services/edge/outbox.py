"""What the edge sends next, and what a study's forwarding state means.  I/O free.

One document per local study in ``edge_studies``:

``pending``  instances to send, or the centre not yet told the study is complete;
``done``     every instance is held by the centre and the centre was told; a late instance
             (the study re-opened locally) makes it ``pending`` again.

The order of work: green channel and stat first, then the oldest study — the patient with a
chest pain in a township must not wait behind a morning's routine X-rays.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

Doc = dict[str, Any]

URGENT, ROUTINE = 0, 1
EDGE_STUDIES = "edge_studies"


def rank(order: Doc | None) -> int:
    """The study's place in the queue from its order (if the edge knows one)."""
    if order and (order.get("green_channel") or order.get("priority") in ("stat", "urgent")):
        return URGENT
    return ROUTINE


def new_entry(study: Doc, *, rank_: int, now: str) -> Doc:
    return {"id": study["id"], "organization": study.get("organization"), "state": "pending", "rank": rank_,
            "first_received_at": study.get("first_received_at") or now, "seen_update": study.get("last_update_at"),
            "next_attempt_at": now, "attempts": 0, "instances": study.get("instance_count", 0), "sent": 0,
            "stored": [], "refused": [], "bytes": 0, "wire_bytes": 0, "last_error": None, "last_success_at": None,
            "completed_at": None, "version": 1}


def reopened(entry: Doc, study: Doc) -> bool:
    """A local study changed since the edge last looked (a late instance)."""
    return study.get("last_update_at") != entry.get("seen_update")


def batches(instances: Sequence[Doc], max_bytes: int, max_count: int = 100) -> list[list[Doc]]:
    """Instances grouped into STOW requests of at most ``max_bytes`` (one large instance alone).

    Small requests are what makes a cut link cheap: a request cut at 90 % is sent again whole."""
    out: list[list[Doc]] = []
    current: list[Doc] = []
    size = 0
    for item in sorted(instances, key=lambda d: (d.get("series_uid") or "", d.get("instance_number") or 0, d["id"])):
        if current and (size + item.get("size", 0) > max_bytes or len(current) >= max_count):
            out.append(current)
            current, size = [], 0
        current.append(item)
        size += item.get("size", 0)
    if current:
        out.append(current)
    return out


def missing(local: Iterable[Doc], held: set[str], refused: Iterable[str]) -> list[Doc]:
    """Local instances the centre does not hold and has not refused for good."""
    skip = held | set(refused)
    return [d for d in local if d["id"] not in skip]


# A refusal the centre will repeat whatever we do: the instance is set aside (the status page shows
# it), never retried, and the study is still completed with the rest.
def permanent(reason: int) -> bool:
    return reason == 0x0124 or 0xA900 <= reason <= 0xA9FF or 0xC000 <= reason <= 0xCFFF
