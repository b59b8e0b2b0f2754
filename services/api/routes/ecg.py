"""The ECG reading view: waveform as JSON, the 12-lead sheet (SVG, PNG), automatic measurements.

Scoped like the study it belongs to (``scope.sees_study``: a clinic its own, a reader the
studies behind his centre's tasks and their priors); every read is audited.  Decoding,
measuring and drawing run in a worker thread: the event loop keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from aiohttp import web

from ...ecg import measure as measuring
from ...ecg import sheet
from ...ecg.load import is_ecg, load
from ...core import bounded
from ...ecg.waveform import ECG_SOP_CLASSES, Ecg, MultiplexGroup, WaveformError, decimate
from ..context import not_found, record, require_role, runtime
from ..problems import Problem, json_response
from ..scope import sees_study
from ..validation import known_query, query_choice, query_int

routes = web.RouteTableDef()

BASE = "/api/v1/studies/{study_uid}/instances/{sop_instance_uid}/ecg"
NO_STORE = {"Cache-Control": "private, no-store"}  # patient data: never kept by a shared cache


async def _ecg(request: web.Request, action: str) -> tuple[dict[str, Any], dict[str, Any], Ecg]:
    """The visible study, its ECG instance and the decoded waveform; 404 for anything else."""
    who = require_role(request, "clinic", "reader", "coordinator", "admin")
    uid, sop = request.match_info["study_uid"], request.match_info["sop_instance_uid"]
    store = runtime(request).store
    resource = f"instance/{sop}"
    study = await store.get("studies", uid)
    if study is None or not await sees_study(store, who, study):
        raise await not_found(request, action, resource, f"study {uid!r}")
    instance = await store.get("instances", sop)
    if instance is None or instance.get("study_uid") != uid or not is_ecg(instance):
        raise await not_found(request, action, resource, f"ECG waveform instance {sop!r} in study {uid!r}")
    try:
        ecg = await load(runtime(request).blobs, instance, bounded.Limits.of(runtime(request).settings))
    except WaveformError as exc:
        await record(request, action, resource, organization=study.get("organization"), outcome="invalid")
        raise Problem(422, f"instance {sop} cannot be shown as an ECG: {exc}", slug="invalid-waveform") from None
    return study, instance, ecg


def _group(request: web.Request, ecg: Ecg) -> MultiplexGroup:
    """``?group=`` (index in the Waveform Sequence) or the rhythm recording."""
    if request.query.get("group") in (None, ""):
        return ecg.rhythm()
    return ecg.groups[query_int(request, "group", 0, 0, len(ecg.groups) - 1)]


def _numbers(values: np.ndarray) -> list[float | None]:
    rounded = np.round(values, 4)
    if np.isnan(rounded).any():
        return [None if v != v else v for v in rounded.tolist()]
    return rounded.tolist()


def _waveform_json(study: dict[str, Any], instance: dict[str, Any], ecg: Ecg, group: MultiplexGroup,
                   max_rate: int | None) -> dict[str, Any]:
    leads, rate = [], group.sampling_rate
    for lead in group.leads:
        samples, rate = (decimate(lead.samples, group.sampling_rate, max_rate) if max_rate
                         else (lead.samples, group.sampling_rate))
        leads.append({"name": lead.name, "unit": lead.unit, "source": lead.source,
                      "filter_low_hz": lead.filter_low_hz, "filter_high_hz": lead.filter_high_hz,
                      "samples": _numbers(samples)})
    return {
        "study_uid": study["id"], "sop_instance_uid": instance["id"], "sop_class_uid": ecg.sop_class_uid,
        "sop_class": ECG_SOP_CLASSES.get(ecg.sop_class_uid, ""),
        "multiplex_group": {"index": group.index, "label": group.label, "originality": group.originality},
        "groups": [{"index": g.index, "label": g.label, "originality": g.originality,
                    "sampling_rate": g.sampling_rate, "sample_count": g.sample_count,
                    "duration": round(g.duration, 4), "leads": [lead.name for lead in g.leads]} for g in ecg.groups],
        "sampling_rate": rate, "original_sampling_rate": group.sampling_rate,
        "sample_count": len(leads[0]["samples"]) if leads else 0, "duration": round(group.duration, 4),
        "leads": leads,
    }


@routes.get(BASE)
async def waveform(request: web.Request) -> web.Response:
    known_query(request, ("group", "max_rate"))
    study, instance, ecg = await _ecg(request, "ecg.read")
    group = _group(request, ecg)
    max_rate = query_int(request, "max_rate", 0, 1, 100_000) if request.query.get("max_rate") else None
    body = await asyncio.to_thread(_waveform_json, study, instance, ecg, group, max_rate)
    await record(request, "ecg.read", f"instance/{instance['id']}", organization=study.get("organization"),
                 detail={"study_uid": study["id"], "multiplex_group": group.index})
    return json_response(body, headers=NO_STORE)


@routes.get(BASE + ".svg")
async def sheet_svg(request: web.Request) -> web.Response:
    known_query(request, ("group",))
    study, instance, ecg = await _ecg(request, "ecg.sheet")
    group = _group(request, ecg)
    text = await asyncio.to_thread(lambda: sheet.to_svg(sheet.layout(ecg, group)))
    await record(request, "ecg.sheet", f"instance/{instance['id']}", organization=study.get("organization"),
                 detail={"study_uid": study["id"], "format": "svg"})
    return web.Response(text=text, content_type="image/svg+xml", charset="utf-8", headers=NO_STORE)


@routes.get(BASE + ".png")
async def sheet_png(request: web.Request) -> web.Response:
    known_query(request, ("group", "px_per_mm"))
    px_per_mm = query_int(request, "px_per_mm", 5, 2, 20)
    study, instance, ecg = await _ecg(request, "ecg.sheet")
    group = _group(request, ecg)
    data = await asyncio.to_thread(lambda: sheet.to_png(sheet.layout(ecg, group), px_per_mm))
    await record(request, "ecg.sheet", f"instance/{instance['id']}", organization=study.get("organization"),
                 detail={"study_uid": study["id"], "format": "png", "px_per_mm": px_per_mm})
    return web.Response(body=data, content_type="image/png", headers=NO_STORE)


@routes.get(BASE + "/measurements")
async def measurements(request: web.Request) -> web.Response:
    known_query(request, ("group", "lead"))
    study, instance, ecg = await _ecg(request, "ecg.measurements")
    group = _group(request, ecg)
    lead = query_choice(request, "lead", tuple(lead.name for lead in group.leads))
    result = await asyncio.to_thread(measuring.measure, group, lead)
    await record(request, "ecg.measurements", f"instance/{instance['id']}",
                 organization=study.get("organization"), detail={"study_uid": study["id"], "lead": result["lead"]})
    return json_response({"study_uid": study["id"], "sop_instance_uid": instance["id"],
                          "multiplex_group": group.index, **result}, headers=NO_STORE)
