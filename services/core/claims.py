"""Work kept as documents and claimed with a compare-and-set lease.

Result deliveries and storage commitment reports are documents with ``state``, ``version``,
``next_attempt_at``, ``lease_expires_at`` and ``worker``.  A worker claims a due one by moving
it to its busy state with a version check, so one worker in the whole deployment works it at a
time; a worker that died leaves a lease that expires, and the document is claimed again.  A
holder known to be gone (``core/holders.py``: a process on the same data directory that has
ended) does not make anyone wait for that: its documents are claimed at once.
"""

from __future__ import annotations

from collections.abc import Collection

from .store.port import Doc, Store


async def due(store: Store, collection: str, *, busy: str, now: str, room: int,
              skip: Collection[str] = (), gone: Collection[str] = ()) -> list[Doc]:
    """Up to ``room`` documents to claim: busy ones whose holder is ``gone``, pending ones whose
    attempt is due, then busy ones whose lease has expired (``now`` is an ISO 8601 UTC time, as
    the documents hold)."""
    if room <= 0:
        return []
    limit = room + len(skip)  # the ones this worker is already on come back too, and are skipped
    found: list[Doc] = []
    for holder in sorted(gone):  # first: they have waited longest, since before the restart
        found += await store.find(collection, {"state": busy, "worker": holder}, limit=limit)
    found += await store.find(collection, {"state": "pending", "next_attempt_at": {"$lte": now}},
                             sort=(("next_attempt_at", 1),), limit=limit)
    found += await store.find(collection, {"state": busy, "lease_expires_at": {"$lt": now}},
                              sort=(("lease_expires_at", 1),), limit=limit)
    unique = {d["id"]: d for d in found if d["id"] not in skip}  # an expired one of a gone holder: once
    return list(unique.values())[:room]


async def claim(store: Store, collection: str, d: Doc, *, busy: str, worker: str, lease_expires_at: str) -> Doc | None:
    """``d`` moved to ``busy`` under this worker's lease, or None if another worker got it first."""
    changes = {"state": busy, "worker": worker, "lease_expires_at": lease_expires_at, "version": d["version"] + 1}
    async with store.transaction() as tx:
        if not await tx.update(collection, d["id"], changes, where={"version": d["version"], "state": d["state"]}):
            return None
    return {**d, **changes}
