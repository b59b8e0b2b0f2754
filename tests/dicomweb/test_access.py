"""Who reaches what over DICOMweb: the API's scope rules, refused roles, bad credentials on every
route, CORS for a viewer on another origin — and every access audited."""

from __future__ import annotations

import json

import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from pydicom import dcmread

from services.core.auth import issue_token
from services.pacs_gateway.announce import StudyAnnouncer

from .conftest import SECRET, VIEWER_ORIGIN
from .helpers import BOUNDARY, STOW_TYPE, multipart, sample_files


@pytest.fixture
async def ct(web, tmp_path):
    """CT_small stored by cg-clinic (chengguan-thc)."""
    path = sample_files(tmp_path / "samples")["ct"]
    status, body, _ = await web.post("/studies", multipart([path.read_bytes()]), STOW_TYPE, user="cg-clinic")
    assert status == 200, body
    return dcmread(path)


def paths(ds) -> list[tuple[str, str]]:
    """Every DICOMweb route with real ids (method, path)."""
    study = f"/studies/{ds.StudyInstanceUID}"
    series = f"{study}/series/{ds.SeriesInstanceUID}"
    instance = f"{series}/instances/{ds.SOPInstanceUID}"
    return [("GET", "/studies"), ("GET", "/series"), ("GET", "/instances"), ("GET", f"{study}/series"),
            ("GET", f"{study}/instances"), ("GET", f"{series}/instances"), ("GET", study), ("GET", series),
            ("GET", instance), ("GET", f"{study}/metadata"), ("GET", f"{series}/metadata"),
            ("GET", f"{instance}/metadata"), ("GET", f"{instance}/frames/1"),
            ("GET", f"{instance}/bulkdata/7FE00010"), ("GET", f"{instance}/rendered"),
            ("GET", f"{instance}/frames/1/rendered"), ("POST", "/studies"), ("POST", study)]


async def test_matrix_covers_every_dicomweb_route(web, ct):
    canonical = {(m, "/dicomweb" + p.replace(ct.StudyInstanceUID, "{study}").replace(ct.SeriesInstanceUID, "{series}")
                  .replace(ct.SOPInstanceUID, "{instance}").replace("/frames/1", "/frames/{frames}")
                  .replace("/bulkdata/7FE00010", "/bulkdata/{tag}")) for m, p in paths(ct)}
    routes = {(r.method, r.resource.canonical) for r in web.service._runner.app.router.routes()
              if r.method != "HEAD" and r.resource.canonical.startswith("/dicomweb")}
    assert routes == canonical


async def test_bad_credentials_get_401_on_every_route(web, ct):
    now = int(time.time())
    bad = {
        "none": None, "not-bearer": "Basic Y2ctY2xpbmljOnB3", "malformed": "Bearer not.a.jwt",
        "other-secret": "Bearer " + issue_token(web.rt.consortium, "admin", "another-secret-" + "y" * 32),
        "expired": "Bearer " + issue_token(web.rt.consortium, "admin", SECRET, ttl=-5),
        "unknown-user": "Bearer " + jwt.encode({"iss": "yilian", "sub": "mallory", "role": "admin",
                                                "org": "county-hospital", "iat": now, "exp": now + 60, "jti": "x"},
                                               SECRET, algorithm="HS256"),
    }
    before = await web.rt.store.count("instances")
    for name, header in bad.items():
        for method, path in paths(ct):
            headers = {"Authorization": header} if header else {}
            async with web.session.request(method, web.root + path, headers=headers,
                                           data=multipart([b"x"]) if method == "POST" else None) as resp:
                assert resp.status == 401, (name, method, path, resp.status)
                assert resp.content_type == "application/problem+json"
    assert await web.rt.store.count("instances") == before


async def test_another_clinic_and_other_centres_see_nothing(web, ct):
    study = ct.StudyInstanceUID
    for user in ("db-clinic", "dr-wang", "coord-county", "dr-chen"):
        for method, path in paths(ct):
            if method != "GET":
                continue
            status, body, _ = await web.get(path, user=user)
            if path in ("/studies", "/series", "/instances"):
                assert (status, body) == (200, b"[]"), (user, path)
            else:
                assert status == 404, (user, path, status)
    # a search naming the study (as a viewer opening it does) is scoped like any other
    assert (await web.get("/studies", user="dr-wang", params={"StudyInstanceUID": study}))[:2] == (200, b"[]")
    # the gateway's announcer announces the STOW-RS study like a C-STOREd one (here: as if quiet already)
    assert await StudyAnnouncer(web.rt).announce_quiet(now=datetime.now(UTC) + timedelta(hours=1)) == 1
    (received,) = await web.events("study.received")
    assert received["data"]["study_uid"] == study and received["data"]["organization"] == "chengguan-thc"
    # a reading request routes the study to county-imaging: its readers now reach it, city-imaging's do not
    async with web.session.post(web.base + "/api/v1/reading-requests", json={
            "study_uid": study, "kind": "imaging", "priority": "routine", "clinical_question": "头痛"},
            headers={"Authorization": f"Bearer {web.token('cg-clinic')}"}) as resp:
        assert resp.status == 201, await resp.text()
        centre = (await resp.json())["centre"]
    assert centre == "county-imaging"
    client = web.client("dr-wang")
    (found,) = await web.run(client.search_for_studies)
    assert found["0020000D"]["Value"] == [study]
    retrieved = await web.run(client.retrieve_instance, study, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    assert retrieved.PixelData == ct.PixelData
    assert await web.run(web.client("dr-chen").search_for_studies) == []
    # named in the query, alone or in a list (checked study by study, not from the centre's whole set)
    for user, wanted in (("dr-wang", [study]), ("dr-chen", []), ("db-clinic", [])):
        for value in (study, f"{study}\\1.2.3.4.5.6"):
            status, body, _ = await web.get("/studies", user=user, params={"StudyInstanceUID": value})
            found = [r["0020000D"]["Value"][0] for r in json.loads(body)] if body else []
            assert (status, found) == (200, wanted), (user, value)
    assert (await web.get(f"/studies/{study}/metadata", user="dr-chen"))[0] == 404
    # the auditor reads the audit log, not images
    assert (await web.get("/studies", user="auditor"))[0] == 403
    # every access audited, refusals included
    audit = await web.rt.store.find("audit", {"actor": "dr-wang"})
    actions = {a["action"] for a in audit}
    assert {"dicomweb.search", "dicomweb.retrieve"} <= actions
    assert any(a["outcome"] == "not_found" for a in audit)
    retrieve = next(a for a in audit if a["action"] == "dicomweb.retrieve" and a["outcome"] == "success")
    assert retrieve["detail"]["sop_instance_uids"] == [ct.SOPInstanceUID]


async def test_stow_takes_the_73_character_boundary_of_orthancs_stow_client(web, ct, tmp_path):
    """Orthanc's DICOMweb plugin (1.7, Debian orthanc-dicomweb) sends two UUIDs joined by '-' as its
    boundary, over RFC 2046's 70: refused, no Orthanc could forward to the centre."""
    boundary = "083ca365-9d75-4ee3-9a29-b1bf9240feb5-083ca365-9d75-4ee3-9a29-b1bf9240feb5"
    mr = sample_files(tmp_path / "orthanc")["mr"].read_bytes()
    status, body, _ = await web.post("/studies", multipart([mr], boundary=boundary),
                                     STOW_TYPE.replace(BOUNDARY, boundary), user="cg-clinic")
    assert status == 200, body
    assert await web.rt.store.count("instances") == 2


async def test_stow_refusals(web, ct, tmp_path):
    files = sample_files(tmp_path / "more")
    mr = files["mr"].read_bytes()
    # a reader may not store (403), nothing kept
    status, _, _ = await web.post("/studies", multipart([mr]), STOW_TYPE, user="dr-wang")
    assert status == 403
    assert await web.rt.store.count("instances") == 1
    # wrong content types: 415
    status, _, _ = await web.post("/studies", mr, "application/dicom", user="cg-clinic")
    assert status == 415
    status, _, _ = await web.post("/studies", multipart([mr]), STOW_TYPE.replace("application/dicom",
                                                                                  "application/dicom+json"),
                                  user="cg-clinic")
    assert status == 415
    # broken multipart: 400
    status, body, _ = await web.post("/studies", mr, 'multipart/related; type="application/dicom"', user="cg-clinic")
    assert status == 400 and b"boundary" in body
    status, _, _ = await web.post("/studies", b"no parts at all", STOW_TYPE, user="cg-clinic")
    assert status == 400
    status, body, _ = await web.post("/studies", multipart([mr], boundary="b" * 201),
                                     STOW_TYPE.replace(BOUNDARY, "b" * 201), user="cg-clinic")
    assert status == 400 and b"too long" in body
    # a part that is not DICOM: 409 with its failure reason; next to a good one: 202
    status, body, headers = await web.post("/studies", multipart([b"hello, not dicom"]), STOW_TYPE, user="cg-clinic")
    assert status == 409 and headers["Content-Type"] == "application/dicom+json"
    from pydicom.dataset import Dataset
    response = Dataset.from_json(body.decode())
    assert response.FailedSOPSequence[0].FailureReason == 0xC210
    status, body, _ = await web.post("/studies", multipart([b"garbage", mr]), STOW_TYPE, user="cg-clinic")
    assert status == 202
    response = Dataset.from_json(body.decode())
    assert len(response.ReferencedSOPSequence) == 1 and len(response.FailedSOPSequence) == 1
    # an instance of another study than the URL's: refused, 0xA900
    status, body, _ = await web.post(f"/studies/{ct.StudyInstanceUID}", multipart([files["j2k"].read_bytes()]),
                                     STOW_TYPE, user="cg-clinic")
    assert status == 409 and Dataset.from_json(body.decode()).FailedSOPSequence[0].FailureReason == 0xA900
    # another clinic adding to cg-clinic's study: refused (0x0124 Not Authorized), the study unchanged
    status, body, _ = await web.post("/studies", multipart([files["ct"].read_bytes()]), STOW_TYPE, user="db-clinic")
    assert status == 409 and Dataset.from_json(body.decode()).FailedSOPSequence[0].FailureReason == 0x0124
    other = dcmread(files["ct"])
    other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    path = tmp_path / "other.dcm"
    other.save_as(path, enforce_file_format=True)
    for user in ("db-clinic", "admin"):  # an administrator's upload does not join a clinic's study either
        status, body, _ = await web.post("/studies", multipart([path.read_bytes()]), STOW_TYPE, user=user)
        assert status == 409 and Dataset.from_json(body.decode()).FailedSOPSequence[0].FailureReason == 0x0124
    assert (await web.rt.store.get("studies", ct.StudyInstanceUID))["instance_count"] == 1
    assert await web.rt.store.get("instances", "1.2.826.0.1.3680043.8.498.1") is None


async def test_duplicates_follow_the_gateway_policy(web, ct, tmp_path):
    raw = sample_files(tmp_path / "dup")["ct"].read_bytes()
    status, _, _ = await web.post("/studies", multipart([raw]), STOW_TYPE, user="cg-clinic")
    assert status == 200
    changed = dcmread(sample_files(tmp_path / "dup")["ct"])
    changed.StudyDescription = "changed"
    path = tmp_path / "changed.dcm"
    changed.save_as(path, enforce_file_format=True)
    status, _, _ = await web.post("/studies", multipart([path.read_bytes()]), STOW_TYPE, user="cg-clinic")
    assert status == 200  # keep_first: accepted, the first copy kept (as C-STORE answers Success)
    assert await web.rt.store.count("instances") == 1
    assert len(await web.events("instance.stored")) == 1
    _, body, headers = await web.get(f"/studies/{ct.StudyInstanceUID}", user="cg-clinic")
    assert raw in body


async def test_size_limit_is_413(tmp_path, monkeypatch):
    from .conftest import start_web, stop_web
    web = await start_web(tmp_path, max_instance_bytes=10_000)
    try:
        raw = sample_files(tmp_path / "big")["ct"].read_bytes()  # about 39 kB
        status, body, _ = await web.post("/studies", multipart([raw]), STOW_TYPE, user="cg-clinic")
        assert status == 413 and b"10000" in body
        assert await web.rt.store.count("instances") == 0
        assert list((tmp_path / "blobs" / ".staging").glob("*.stow")) == []
    finally:
        await stop_web(web)


async def test_cors_for_a_viewer_on_another_origin(web, ct):
    url = web.root + f"/studies/{ct.StudyInstanceUID}/metadata"
    # preflight: no credentials, answered before authentication
    async with web.session.options(url, headers={"Origin": VIEWER_ORIGIN, "Access-Control-Request-Method": "GET",
                                                 "Access-Control-Request-Headers": "authorization,accept"}) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == VIEWER_ORIGIN
        assert resp.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type, Accept"
        assert "GET" in resp.headers["Access-Control-Allow-Methods"]
    async with web.session.options(url, headers={"Origin": "https://evil.example",
                                                 "Access-Control-Request-Method": "GET"}) as resp:
        assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers
    # actual responses: JSON, streamed multipart, and errors alike
    for path, user in ((f"/studies/{ct.StudyInstanceUID}/metadata", "cg-clinic"),
                       (f"/studies/{ct.StudyInstanceUID}", "cg-clinic"), ("/studies", None)):
        status, _, headers = await web.get(path, user=user, headers={"Origin": VIEWER_ORIGIN})
        assert status == (401 if user is None else 200)
        assert headers["Access-Control-Allow-Origin"] == VIEWER_ORIGIN
        assert "Content-Type" in headers["Access-Control-Expose-Headers"]
    _, _, headers = await web.get("/studies", user="cg-clinic", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in headers


async def test_no_cors_when_no_origin_is_configured(tmp_path):
    from .conftest import start_web, stop_web
    web = await start_web(tmp_path, cors_origins=())
    try:
        async with web.session.options(web.root + "/studies", headers={
                "Origin": VIEWER_ORIGIN, "Access-Control-Request-Method": "GET"}) as resp:
            assert "Access-Control-Allow-Origin" not in resp.headers
        _, _, headers = await web.get("/studies", user="cg-clinic", headers={"Origin": VIEWER_ORIGIN})
        assert "Access-Control-Allow-Origin" not in headers
    finally:
        await stop_web(web)
