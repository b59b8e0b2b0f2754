"""The audit trail: who read or changed which patient data, when, and from where.

Records are written in the same transaction as the change they describe (or, for reads,
in their own), are append-only (no update or delete path exists in any API), and are
queried by auditors through the API.

The trail is hash-chained, so an edited, removed or inserted record shows.  Each record
carries its ``seq`` (1, 2, 3 ... with no gap), ``prev`` (the hash of record ``seq - 1``) and
``hash`` (SHA-256 over the canonical JSON of the record without ``hash``).  The chain head,
``audit_chain/head`` (the last seq and hash), is read and rewritten in the same store
transaction as the record: SQLite's ``BEGIN IMMEDIATE`` and MongoDB's transactions (which all
serialise on the event-log counter) make every writer, in any process, link to the record
committed just before its own.  :func:`verify` walks the chain and names the first record
that does not fit.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .events import utc_now
from .store.port import Doc, Store, Transaction

CHAIN = "audit_chain"
HEAD = "head"
GENESIS = "0" * 64  # ``prev`` of record 1


def new_record(*, actor: str, role: str, action: str, resource: str, organization: str | None = None,
               outcome: str = "success", remote: str | None = None, detail: dict[str, Any] | None = None,
               traceparent: str | None = None) -> Doc:
    """One audit record, not yet linked into the chain.

    ``action`` is a dotted verb (``study.read``, ``reading.claim``); ``resource`` names what was
    touched (``study/1.2.3``, ``reading/<id>``); ``organization`` is the owner of the data.
    ``actor`` is a user id, or ``system:<service>`` for automatic transitions.
    """
    return {"id": uuid.uuid4().hex, "time": utc_now(), "actor": actor, "role": role, "action": action,
            "resource": resource, "organization": organization, "outcome": outcome, "remote": remote,
            "detail": detail or {}, "traceparent": traceparent}


def canonical_json(value: Any) -> bytes:
    """One byte form per JSON value: keys sorted, no spaces, UTF-8 (what hashes are taken over)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def canonical(doc: Doc) -> bytes:
    """The bytes a record's hash covers: its JSON without ``hash``."""
    return canonical_json({k: v for k, v in doc.items() if k != "hash"})


def digest(doc: Doc) -> str:
    return hashlib.sha256(canonical(doc)).hexdigest()


def link(head: Doc | None, records: Sequence[Doc]) -> tuple[Doc, list[Doc]]:
    """Chain ``records`` after ``head`` (None: an empty trail); returns the new head and the records."""
    seq, prev = (head["seq"], head["hash"]) if head else (0, GENESIS)
    linked = []
    for record in records:
        seq += 1
        doc = {**record, "seq": seq, "prev": prev}
        # A JSON round trip first, so the hash covers what the store will hand back (tuples as lists).
        doc = json.loads(canonical(doc))
        doc["hash"] = prev = digest(doc)
        linked.append(doc)
    return {"id": HEAD, "seq": seq, "hash": prev, "time": linked[-1]["time"] if linked else None}, linked


async def record(tx: Transaction, **fields: Any) -> None:
    """Append one audit record (``new_record``'s arguments) in ``tx``."""
    head, (doc,) = link(await tx.get(CHAIN, HEAD), [new_record(**fields)])
    await tx.insert("audit", doc)
    await tx.put(CHAIN, head)


# --- verification -----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Break:
    """The first record that does not fit the chain."""

    seq: int
    problem: str  # altered | missing | unexpected
    message: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Verification:
    intact: bool
    records: int  # chained records checked
    head_seq: int
    head_hash: str | None
    unchained: int  # records written before the chain existed (no seq), not covered
    first_break: Break | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["first_break"] = asdict(self.first_break) if self.first_break else None
        return out


class ChainCheck:
    """Feed records in ``seq`` order; stops at the first that does not fit (pure, no I/O)."""

    def __init__(self) -> None:
        self.expected, self.prev, self.checked = 1, GENESIS, 0
        self.first_break: Break | None = None

    def feed(self, doc: Doc) -> bool:
        """False once a break is found."""
        seq = doc.get("seq")
        if seq != self.expected:
            if isinstance(seq, int) and seq > self.expected:
                self._break(self.expected, "missing", f"record {self.expected} is missing "
                            f"(the next one found is {seq})")
            else:
                self._break(self.expected, "unexpected", f"record {doc.get('id')} claims seq {seq!r} "
                            f"where {self.expected} was due", doc.get("id"))
            return False
        if doc.get("prev") != self.prev:
            # The record before was edited and re-hashed, or this one points elsewhere.
            self._break(seq - 1 if seq > 1 else seq, "altered",
                        f"record {seq}'s prev does not match the hash of record {seq - 1}", doc.get("id"))
            return False
        if digest(doc) != doc.get("hash"):
            self._break(seq, "altered", f"record {seq}'s content does not match its hash", doc.get("id"))
            return False
        self.expected, self.prev, self.checked = seq + 1, doc["hash"], self.checked + 1
        return True

    def finish(self, head: Doc | None) -> None:
        """The head names the last record committed: records after the last one found are missing."""
        if self.first_break or head is None:
            return
        if head.get("seq", 0) >= self.expected:
            self._break(self.expected, "missing", f"record {self.expected} is missing "
                        f"(the chain head is at {head['seq']})")
        elif head.get("hash") != self.prev:
            self._break(self.expected - 1, "altered", "the chain head's hash does not match the last record")

    def _break(self, seq: int, problem: str, message: str, id: str | None = None) -> None:
        self.first_break = Break(seq, problem, message, id)


async def verify(store: Store, *, page: int = 1000) -> Verification:
    """Walk the whole chain in ``seq`` order (reads only; one page in memory at a time)."""
    head = await store.get(CHAIN, HEAD)
    check, after = ChainCheck(), 0
    while check.first_break is None:
        docs = await store.find("audit", {"seq": {"$gt": after}}, sort=(("seq", 1),), limit=page)
        if not docs:
            break
        for doc in docs:
            if not check.feed(doc):
                break
        after = docs[-1]["seq"]
    check.finish(head)
    if check.first_break is None and head is None and check.checked:
        check._break(check.expected - 1, "altered", "the chain head is missing")
    unchained = await store.count("audit", {"seq": None})
    return Verification(intact=check.first_break is None, records=check.checked,
                        head_seq=head["seq"] if head else 0, head_hash=head["hash"] if head else None,
                        unchained=unchained, first_break=check.first_break)
