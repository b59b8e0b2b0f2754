"""The centre's side of township edges (前置机): an edge says a study is complete, reports its
heartbeat and backlog, fetches its clinic's results (SR + PDF) for the terminal on the clinic's LAN
and says it stored them there; coordinators see every edge and which went silent (docs/edge.md)."""

from __future__ import annotations

import base64
import io
import os
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian

from ...core import held_studies
from ...core.events import utc_now
from ...delivery import service as delivery
from ...delivery.model import delivery_id, public_delivery
from ..context import record, remote, require_role, runtime
from ..problems import Problem, json_response
from ..validation import json_body

routes = web.RouteTableDef()

HEARTBEATS = "edge_heartbeats"
BACKLOG_FIELDS = ("backlog_studies", "backlog_instances", "bytes_pending", "rate_bytes_per_second",
                  "results_pending", "results_refused", "procedure_steps_pending")


def silent_after() -> float:
    """Seconds without a heartbeat after which an edge is shown silent (red)."""
    raw = os.environ.get("YILIAN_EDGE_SILENT_SECONDS") or "120"
    try:
        return max(1.0, float(raw))
    except ValueError:
        raise SystemExit(f"YILIAN_EDGE_SILENT_SECONDS must be a number of seconds, got {raw!r}") from None


@routes.post("/api/v1/edge/studies/{study_uid}/complete")
async def complete(request: web.Request) -> web.Response:
    """Every instance of the study is held here: announce it (``study.received``) after the quiet period."""
    who = require_role(request, "edge")
    uid = request.match_info["study_uid"]
    body = await json_body(request)
    count = body.get("instances")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise Problem(422, "instances must be the number of instances the edge sent (an integer ≥ 1)")
    rt = runtime(request)
    study = await rt.store.get("studies", uid)
    if study is None or study.get("organization") != who.organization:
        await record(request, "edge.complete", f"study/{uid}", outcome="not_found")
        raise Problem(404, f"no study {uid!r} of {who.organization} here")
    held = study.get("instance_count", 0)
    if held < count:
        raise Problem(409, f"the centre holds {held} of the {count} instances; send the rest first")
    await held_studies.release(rt.store, uid, instances=count, at=utc_now())
    await record(request, "edge.complete", f"study/{uid}", organization=who.organization,
                 detail={"instances": count})
    return json_response({"study_uid": uid, "instances": held, "state": study.get("state")})


@routes.post("/api/v1/edge/heartbeat")
async def heartbeat(request: web.Request) -> web.Response:
    who = require_role(request, "edge")
    body = await json_body(request)
    doc: dict[str, Any] = {"id": who.user_id, "organization": who.organization, "received_at": utc_now()}
    for name in BACKLOG_FIELDS:
        value = body.get(name, 0)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise Problem(422, f"{name} must be a number ≥ 0")
        doc[name] = value
    for name in ("last_success_at", "last_error", "version"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise Problem(422, f"{name} must be a string")
        doc[name] = value[:500] if isinstance(value, str) else None
    async with runtime(request).store.transaction() as tx:
        await tx.put(HEARTBEATS, doc)
    return json_response({"received_at": doc["received_at"], "silent_after_seconds": silent_after()})


@routes.get("/api/v1/edges")
async def edges(request: web.Request) -> web.Response:
    """Every edge's last heartbeat and backlog; ``silent`` when none came for YILIAN_EDGE_SILENT_SECONDS.

    Not audited, like the monitor's aggregates: the dashboard polls it all day and it names no patient."""
    require_role(request, "coordinator", "admin")
    rt = runtime(request)
    now = datetime.now(UTC)
    limit = silent_after()
    items = []
    for doc in await rt.store.find(HEARTBEATS, sort=[("organization", 1), ("id", 1)]):
        seen = datetime.fromisoformat(doc["received_at"].replace("Z", "+00:00"))
        age = (now - seen).total_seconds()
        org = rt.consortium.organizations.get(doc.get("organization") or "")
        user = rt.consortium.users.get(doc["id"])
        items.append({**{k: v for k, v in doc.items() if k != "id"}, "edge": doc["id"],
                      "organization_name": org.name if org else None, "edge_name": user.name if user else None,
                      "seconds_since_heartbeat": round(age, 1), "silent": age > limit})
    return json_response({"items": items, "silent_after_seconds": limit})


# --- results back through the edge -----------------------------------------------------------

async def _edge_delivery(request: web.Request, action: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The result and its ``edge`` delivery, if they are this edge's clinic's (else 404, as unknown)."""
    who = require_role(request, "edge")
    rid = request.match_info["result_id"]
    rt = runtime(request)
    d = await rt.store.get(delivery.DELIVERIES, delivery_id(rid, "edge"))
    result = await rt.store.get(delivery.RESULTS, rid)
    if d is None or result is None or d["organization"] != who.organization:
        await record(request, action, f"result/{rid}", outcome="not_found")
        raise Problem(404, f"no result {rid!r} for the terminal of {who.organization} here (a result goes to the "
                           "edge only when its organisation's scp is via_edge and the centre holds the study)")
    return result, d


def part10(ds: Dataset) -> bytes:
    """A dataset as a DICOM file (Part 10), as a terminal would have written it on receipt."""
    ds = ds.copy()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


@routes.get("/api/v1/results/{result_id}/objects")
async def result_objects(request: web.Request) -> web.Response:
    """The result's DICOM SR and Encapsulated PDF, exactly as the delivery service would C-STORE them
    (same SOP Instance UIDs, the same signed PDF), for the edge to store at the clinic's terminal."""
    result, d = await _edge_delivery(request, "result.objects")
    rt = runtime(request)
    if d["state"] == "delivered":  # an edge that lost its queue (or first started) must not store it twice
        await record(request, "result.objects", f"result/{result['id']}", organization=result["organization"],
                     outcome="conflict")
        raise Problem(409, f"result {result['id']!r} is already stored at the terminal ({d.get('delivered_at')})")
    kept = await rt.store.get(delivery.SIGNED_PDFS, result["id"])
    if kept is None:  # the delivery worker signs it within moments of the result
        raise Problem(503, f"result {result['id']!r} is being prepared (its PDF is not signed yet); try again",
                      headers={"Retry-After": "2"})
    study = await rt.store.get("studies", result["study_uid"] or "") or {}
    objects = await delivery.result_objects(rt, result, study=study, signed=base64.b64decode(kept["pdf"]),
                                            digest=kept["sha256"])
    boundary = uuid.uuid4().hex
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part10(ds) + b"\r\n"
                    for ds in objects) + f"--{boundary}--\r\n".encode()
    await record(request, "result.objects", f"result/{result['id']}", organization=result["organization"],
                 detail={"sop_instance_uids": [ds.SOPInstanceUID for ds in objects], "delivery_state": d["state"]})
    return web.Response(body=body, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Cache-Control": "private, no-store"})


@routes.post("/api/v1/edge/results/{result_id}/delivered")
async def result_delivered(request: web.Request) -> web.Response:
    """The edge stored the result at the clinic's terminal: the delivery is done (once; repeating it
    changes nothing)."""
    result, _ = await _edge_delivery(request, "result.deliver")
    who = require_role(request, "edge")
    body = await json_body(request)
    terminal = body.get("terminal")
    if not isinstance(terminal, str) or not terminal.strip() or len(terminal) > 200:
        raise Problem(422, "terminal must name the terminal that answered Success (AE@host:port)")
    sent = body.get("sop_instance_uids")
    expected = {result["sr_sop_instance_uid"], result["pdf_sop_instance_uid"]}
    if not isinstance(sent, list) or set(sent) != expected:
        raise Problem(422, "sop_instance_uids must be the SOP Instance UIDs of the result's SR and PDF "
                           f"that the terminal accepted: {sorted(expected)}")
    try:
        done = await delivery.edge_delivered(runtime(request), result["id"], organization=who.organization,
                                             actor=who.user_id, remote=remote(request), terminal=terminal.strip(),
                                             sent=sorted(expected))
    except delivery.Conflict as exc:
        raise Problem(409, str(exc)) from None
    return json_response(public_delivery(done))
