"""The ``/dicomweb`` routes (PS3.18): thin handlers over qido, wado, stow and render.

Authenticated by the API's middleware (bearer token), scoped by the API's rules: what the
caller may not see is 404 (QIDO under such a study too) or simply absent from a search.
Every access is audited, refused ones included, before any byte of patient data leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from ...core.blobs.port import BlobNotFound
from ...core import bounded, held_studies
from ...core.events import utc_now
from ..context import not_found, record, require_role, runtime
from ..problems import Problem
from ..scope import sees_study
from . import qido, render, stow, wado
from .access import ROLES, STORE_ROLES, named_studies, search_scope
from .dicom_json import MEDIA_TYPE, RETRIEVE_URL, dataset_json, record_json, store_response
from .multipart import MultipartWriter, parse_accept

log = logging.getLogger("yilian.api.dicomweb")
routes = web.RouteTableDef()

PREFIX = "/dicomweb"
STUDY = PREFIX + "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"
AVAILABLE_TRANSFER_SYNTAX = 0x00083002


def base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}{PREFIX}"


def dicom_json(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # Bytes, so aiohttp adds no charset: some clients compare the media type exactly.
    return web.Response(body=json.dumps(data, ensure_ascii=False).encode("utf-8"), status=status,
                        content_type=MEDIA_TYPE, headers=headers)


def not_acceptable(detail: str) -> Problem:
    return Problem(406, detail, slug="not-acceptable", title="Not Acceptable")


def _check_json_accepted(request: web.Request) -> None:
    ok = {"*/*", "application/*", MEDIA_TYPE, "application/json"}
    if not any(r.media_type in ok for r in parse_accept(request.headers.get("Accept"))):
        raise not_acceptable(f"this resource is {MEDIA_TYPE}")


async def _study(request: web.Request, action: str) -> dict[str, Any]:
    """The study of the path if the caller may see it, else an audited 404."""
    who = require_role(request, *ROLES)
    uid = request.match_info["study"]
    store = runtime(request).store
    study = await store.get("studies", uid)
    if study is None or not await sees_study(store, who, study):
        raise await not_found(request, action, f"study/{uid}", f"study {uid!r}")
    return study


async def _instances(request: web.Request, action: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    study = await _study(request, action)
    info = request.match_info
    found = await wado.instances_of(runtime(request).store, study["id"], info.get("series"), info.get("instance"))
    if not found:
        what = f"instance {info['instance']!r}" if "instance" in info else f"series {info.get('series')!r}"
        raise await not_found(request, action, request.path, what)
    return study, found


def _instance_url(base: str, doc: dict[str, Any]) -> str:
    return f"{base}/studies/{doc['study_uid']}/series/{doc['series_uid']}/instances/{doc['id']}"


# --- QIDO-RS ------------------------------------------------------------------------------

async def _search(request: web.Request, level: str) -> web.Response:
    who = require_role(request, *ROLES)
    _check_json_accepted(request)
    fixed = {}
    checked = None  # a study in the path is checked by _study: the search needs no wider scope
    if "study" in request.match_info:
        fixed["StudyInstanceUID"] = checked = (await _study(request, "dicomweb.search"))["id"]
    if "series" in request.match_info:
        fixed["SeriesInstanceUID"] = request.match_info["series"]
    try:
        search = qido.parse_search(level, request.query.items(), fixed)
    except qido.SearchError as exc:
        raise Problem(400, str(exc)) from None
    store = runtime(request).store
    scope = await search_scope(store, who, named_studies(search.matchers, checked))
    records = await qido.search(store, search, scope)
    base = base_url(request)
    body = [record_json(r, search.keywords, extra={RETRIEVE_URL: qido.retrieve_url(base, r, level)})
            for r in records]
    await record(request, "dicomweb.search", request.path,
                 detail={"level": level, "query": dict(request.query),
                         "study_uids": sorted({r["StudyInstanceUID"] for r in records})})
    headers = {}
    if search.ignored:
        headers["Warning"] = _warning("The following attributes are not supported as query keys or include "
                                      f"fields and were ignored: {', '.join(search.ignored)}")
    return dicom_json(body, headers=headers)


@routes.get(PREFIX + "/studies")
async def search_studies(request: web.Request) -> web.Response:
    return await _search(request, "STUDY")


@routes.get(PREFIX + "/series")
async def search_all_series(request: web.Request) -> web.Response:
    return await _search(request, "SERIES")


@routes.get(PREFIX + "/instances")
async def search_all_instances(request: web.Request) -> web.Response:
    return await _search(request, "IMAGE")


@routes.get(STUDY + "/series")
async def search_series(request: web.Request) -> web.Response:
    return await _search(request, "SERIES")


@routes.get(STUDY + "/instances")
async def search_study_instances(request: web.Request) -> web.Response:
    return await _search(request, "IMAGE")


@routes.get(SERIES + "/instances")
async def search_series_instances(request: web.Request) -> web.Response:
    return await _search(request, "IMAGE")


# --- WADO-RS: instances ----------------------------------------------------------------------

async def _retrieve(request: web.Request) -> web.StreamResponse:
    study, found = await _instances(request, "dicomweb.retrieve")
    try:
        syntax = wado.negotiate_instances(parse_accept(request.headers.get("Accept")),
                                          {d.get("transfer_syntax_uid") or "" for d in found})
    except wado.NotAcceptable as exc:
        raise not_acceptable(str(exc)) from None
    await record(request, "dicomweb.retrieve", request.path, organization=study.get("organization"),
                 detail={"sop_instance_uids": [d["id"] for d in found]})
    rt, base = runtime(request), base_url(request)
    writer, response = await _start_multipart(request, wado.DICOM, syntax)
    for doc in found:  # one file at a time, chunk by chunk
        try:
            await writer.part(response, rt.blobs.read_chunks(doc["blob_key"]),
                              content_type=f"{wado.DICOM}; transfer-syntax={doc.get('transfer_syntax_uid')}",
                              location=_instance_url(base, doc))
        except BlobNotFound:
            raise _cut(request, f"blob of {doc['id']} missing") from None
    await writer.close(response)
    return response


@routes.get(STUDY)
async def retrieve_study(request: web.Request) -> web.StreamResponse:
    return await _retrieve(request)


@routes.get(SERIES)
async def retrieve_series(request: web.Request) -> web.StreamResponse:
    return await _retrieve(request)


@routes.get(INSTANCE)
async def retrieve_instance(request: web.Request) -> web.StreamResponse:
    return await _retrieve(request)


# --- WADO-RS: metadata -----------------------------------------------------------------------

async def _metadata(request: web.Request) -> web.Response:
    _check_json_accepted(request)
    study, found = await _instances(request, "dicomweb.metadata")
    rt, base = runtime(request), base_url(request)
    out = []
    for doc in found:
        url = _instance_url(base, doc)
        syntax = doc.get("transfer_syntax_uid") or ""
        async with wado.local_file(rt.blobs, doc["blob_key"]) as path, _decodable(doc):
            header = await asyncio.to_thread(wado.read_header, path, syntax, _limits(request))
            pixels = (wado.pixel_vr(header, syntax), f"{url}/bulkdata/7FE00010") if doc.get("rows") else None
            item = await asyncio.to_thread(dataset_json, header, lambda tag, u=url: f"{u}/bulkdata/{tag:08X}",
                                           pixel_data=pixels)
        item[f"{AVAILABLE_TRANSFER_SYNTAX:08X}"] = {"vr": "UI", "Value": [syntax]}
        out.append(dict(sorted(item.items())))
    await record(request, "dicomweb.metadata", request.path, organization=study.get("organization"),
                 detail={"sop_instance_uids": [d["id"] for d in found]})
    return dicom_json(out)


@routes.get(STUDY + "/metadata")
async def study_metadata(request: web.Request) -> web.Response:
    return await _metadata(request)


@routes.get(SERIES + "/metadata")
async def series_metadata(request: web.Request) -> web.Response:
    return await _metadata(request)


@routes.get(INSTANCE + "/metadata")
async def instance_metadata(request: web.Request) -> web.Response:
    return await _metadata(request)


# --- WADO-RS: frames and bulk data -------------------------------------------------------------

async def _start_multipart(request: web.Request, part_type: str,
                           syntax: str | None = None) -> tuple[MultipartWriter, web.StreamResponse]:
    """A prepared ``multipart/related`` response, to write parts to as they are read."""
    writer = MultipartWriter(part_type)
    response = web.StreamResponse(headers={"Content-Type": writer.content_type(syntax)})
    await response.prepare(request)
    return writer, response


def _cut(request: web.Request, reason: str) -> ConnectionAbortedError:
    """End a streamed response that cannot be finished: the connection is closed, so the client
    sees a truncated body, never a whole-looking one (nor waits for the rest on a kept-alive
    connection, as when the problem middleware answered after the head had gone)."""
    log.error("streamed response cut", extra={"path": request.path, "reason": reason})
    if request.transport is not None:
        request.transport.close()
    return ConnectionAbortedError(reason)


def _limits(request: web.Request) -> bounded.Limits:
    return bounded.Limits.of(runtime(request).settings)


@contextlib.asynccontextmanager
async def _decodable(doc: dict[str, Any]) -> AsyncIterator[None]:
    """A stored instance no read can decode (nested too deep, not whole, inflating past the
    ceiling: stored before the store-time checks, or damaged) is a 422 naming it, never a 500."""
    try:
        yield
    except bounded.Undecodable as exc:
        raise _undecodable(f"stored instance {doc['id']} cannot be decoded: {exc.reason}") from None
    except RecursionError:
        raise _undecodable(f"stored instance {doc['id']} cannot be decoded: sequences nested too deeply") from None


def _undecodable(detail: str) -> Problem:
    return Problem(422, detail, slug="undecodable-instance", title="Stored instance cannot be decoded")


@routes.get(INSTANCE + "/frames/{frames}")
async def frames(request: web.Request) -> web.StreamResponse:
    study, (doc,) = await _instances(request, "dicomweb.frames")
    syntax = doc.get("transfer_syntax_uid") or ""
    try:
        numbers = wado.parse_frames(request.match_info["frames"])
        part_type, decode = wado.negotiate_frames(parse_accept(request.headers.get("Accept")), syntax)
    except wado.FrameError as exc:
        raise Problem(400, str(exc)) from None
    except wado.NotAcceptable as exc:
        raise not_acceptable(str(exc)) from None
    sent_syntax = wado.EXPLICIT_LE if part_type == wado.OCTET else syntax
    async with wado.local_file(runtime(request).blobs, doc["blob_key"]) as path:
        try:
            async with _decodable(doc):
                layout = await asyncio.to_thread(wado.frame_layout, path, numbers, syntax, _limits(request))
        except wado.FrameError as exc:
            raise Problem(404 if "no pixel data" in str(exc) else 400, str(exc)) from None
        try:  # the first frame before the head goes: a frame pydicom cannot decode is still a problem document
            data = await asyncio.to_thread(wado.read_frame, path, layout, numbers[0], decode=decode)
        except Exception as exc:  # noqa: BLE001 - no decoder, corrupt data: the client is told
            raise _undecodable(f"frame {numbers[0]} of stored instance {doc['id']} cannot be decoded: {exc}") from None
        await record(request, "dicomweb.frames", request.path, organization=study.get("organization"),
                     detail={"sop_instance_uid": doc["id"], "frames": numbers})
        # One frame read, sent, and let go at a time: memory stays at one frame for any list.
        writer, response = await _start_multipart(request, part_type, sent_syntax)
        for n in numbers:
            if n != numbers[0]:
                try:
                    data = await asyncio.to_thread(wado.read_frame, path, layout, n, decode=decode)
                except Exception as exc:  # noqa: BLE001 - the head went already: cut, never a partial lie
                    raise _cut(request, f"frame {n} of {doc['id']} cannot be decoded: {exc}") from None
            await writer.part(response, data, content_type=f"{part_type}; transfer-syntax={sent_syntax}")
            del data
        await writer.close(response)
        return response


@routes.get(INSTANCE + "/bulkdata/{tag}")
async def bulkdata(request: web.Request) -> web.StreamResponse:
    study, (doc,) = await _instances(request, "dicomweb.bulkdata")
    text = request.match_info["tag"]
    if len(text) != 8 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise Problem(400, "bulk data is addressed by a top-level tag, 8 hex digits (e.g. 7FE00010)")
    try:
        async with wado.local_file(runtime(request).blobs, doc["blob_key"]) as path, _decodable(doc):
            data = await asyncio.to_thread(wado.read_bulk, path, int(text, 16), doc.get("transfer_syntax_uid") or "",
                                           _limits(request))
            await record(request, "dicomweb.bulkdata", request.path, organization=study.get("organization"),
                         detail={"sop_instance_uid": doc["id"], "tag": text})
            writer, response = await _start_multipart(request, wado.OCTET)
            # Pixel Data streams from the file, a chunk at a time; other values are small.
            try:
                await writer.part(response, data if isinstance(data, bytes) else wado.file_range(path, *data),
                                  content_type=wado.OCTET)
            except ConnectionAbortedError as exc:  # the file ends before its Pixel Data does
                raise _cut(request, str(exc)) from None
            await writer.close(response)
            return response
    except (KeyError, wado.FrameError):
        raise await not_found(request, "dicomweb.bulkdata", request.path, f"element {text}") from None


# --- WADO-RS: rendered --------------------------------------------------------------------------

def _rendered_type(request: web.Request) -> str:
    for r in parse_accept(request.headers.get("Accept")):
        if r.media_type in render.MEDIA_TYPES:
            return r.media_type
        if r.media_type in ("*/*", "image/*"):
            return "image/jpeg"  # PS3.18 8.3.5.1.2: JPEG unless asked otherwise
    raise not_acceptable("rendered images are image/jpeg or image/png")


async def _rendered(request: web.Request, frame: int) -> web.Response:
    study, (doc,) = await _instances(request, "dicomweb.rendered")
    media_type = _rendered_type(request)
    try:
        window = render.parse_window(request.query.get("window"))
        viewport = render.parse_viewport(request.query.get("viewport"))
        quality = int(request.query.get("quality", "90"))
        if not 1 <= quality <= 100:
            raise render.RenderError("quality must be 1..100")
    except ValueError as exc:
        raise Problem(400, str(exc)) from None
    async with wado.local_file(runtime(request).blobs, doc["blob_key"]) as path, _decodable(doc):
        try:
            image = await asyncio.to_thread(wado.render_frame, path, frame, doc.get("transfer_syntax_uid") or "",
                                            _limits(request), media_type=media_type, window=window,
                                            viewport=viewport, quality=quality)
        except render.RenderError as exc:
            raise Problem(400, str(exc)) from None
    await record(request, "dicomweb.rendered", request.path, organization=study.get("organization"),
                 detail={"sop_instance_uid": doc["id"], "frame": frame})
    return web.Response(body=image, content_type=media_type)


@routes.get(INSTANCE + "/rendered")
async def rendered_instance(request: web.Request) -> web.Response:
    return await _rendered(request, 1)


@routes.get(INSTANCE + "/frames/{frames}/rendered")
async def rendered_frame(request: web.Request) -> web.Response:
    try:
        numbers = wado.parse_frames(request.match_info["frames"])
    except wado.FrameError as exc:
        raise Problem(400, str(exc)) from None
    return await _rendered(request, numbers[0])


# --- STOW-RS ---------------------------------------------------------------------------------------

async def _store(request: web.Request) -> web.Response:
    who = require_role(request, *STORE_ROLES)
    study_uid = request.match_info.get("study")
    rt = runtime(request)
    if who.role == "edge":
        if not study_uid:
            raise Problem(400, "an edge stores into one study at a time: POST /dicomweb/studies/{study}")
        await held_studies.hold(rt.store, study_uid, organization=who.organization, edge=who.user_id, at=utc_now())
    try:
        result = await stow.store(request, rt, who, study_uid)
    except stow.StowError as exc:
        await record(request, "dicomweb.store", request.path, organization=who.organization, outcome="refused",
                     detail={"status": exc.status, "reason": exc.detail})
        raise Problem(exc.status, exc.detail) from None
    base = base_url(request)
    studies = sorted({s for _, _, s, _ in result.stored})
    body = store_response(
        f"{base}/studies/{study_uid or studies[0]}" if (study_uid or len(studies) == 1) else None,
        [(c, i, f"{base}/studies/{s}/series/{se}/instances/{i}") for c, i, s, se in result.stored],
        [(c, i, reason) for c, i, reason, _ in result.failed])
    await record(request, "dicomweb.store", request.path, organization=who.organization,
                 outcome="success" if not result.failed else "partial" if result.stored else "failure",
                 detail={"stored": [i for _, i, _, _ in result.stored], "results": result.results,
                         "failed": [{"sop_instance_uid": i, "reason": f"0x{r:04X}", "why": why}
                                    for _, i, r, why in result.failed]})
    # The Failure Reason is a code; the words go in Warning header fields (PS3.18 8.4.4), one per instance.
    warnings = [_warning(f"{i or 'part'} refused: {why}") for _, i, _, why in result.failed]
    return dicom_json(body, status=result.status, headers={"Warning": ", ".join(warnings)} if warnings else None)


def _warning(text: str) -> str:
    """A Warning header field value (RFC 7234 5.5): ASCII, one line, in a quoted string."""
    text = "".join(c if " " <= c < "\x7f" and c not in '"\\' else "?" for c in text)
    return f'299 yilian "{text}"'


@routes.post(PREFIX + "/studies")
async def store_instances(request: web.Request) -> web.Response:
    return await _store(request)


@routes.post(STUDY)
async def store_study_instances(request: web.Request) -> web.Response:
    return await _store(request)
