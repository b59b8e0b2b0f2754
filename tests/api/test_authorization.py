"""The authorisation matrix: every endpoint refuses bad credentials, and nobody reaches
another clinic's patients or another centre's tasks — and nothing changes when refused."""

from __future__ import annotations

import time

import jwt
import pytest

from services.api.auth import is_page
from services.delivery.model import new_delivery
from services.core.auth import issue_token

CG_CT, CG_DX = "1.2.826.0.1.100.1", "1.2.826.0.1.100.2"
PUBLIC = {"/", "/healthz", "/readyz", "/api/v1/openapi.json", "/metrics", "/dashboard", "/figures", "/signin",
          "/desk/static/{name}"}
PUBLIC_OPERATIONS = {("POST", "/api/v1/session")}  # signing in


async def scenario(api) -> dict[str, str]:
    """cg-clinic has a signed report (CT) and a task claimed by dr-wang (DX), both at county-imaging."""
    done = await api.create_request(CG_CT)
    await api.ok("POST", f"/api/v1/reading-requests/{done['id']}/claim", "dr-wang")
    signed = await api.ok("POST", f"/api/v1/reading-requests/{done['id']}/sign", "dr-wang",
                          {"findings": "未见异常", "impression": "正常"})
    task = await api.create_request(CG_DX)
    await api.ok("POST", f"/api/v1/reading-requests/{task['id']}/claim", "dr-wang")
    consultation = await api.ok("POST", "/api/v1/consultations", "cg-clinic", CONSULTATION_BODY, status=201)
    order = await api.ok("POST", "/api/v1/orders", "cg-clinic", ORDER_BODY, status=201)
    referral = await api.ok("POST", "/api/v1/referrals", "cg-clinic", REFERRAL_BODY, status=201)
    return {"study": CG_CT, "rid": task["id"], "report": signed["report_id"], "cons": consultation["id"],
            "instance": CG_CT + ".1.1", "order": order["id"], "ref": referral["id"]}


CONSULTATION_BODY = {"chief_complaint": "胸闷", "question": "是否需要上转?", "urgency": "routine",
                     "study_uids": [CG_CT]}
ORDER_BODY = {"patient_id": "CG900", "patient_name": "张^三", "kind": "imaging", "modality": "CT",
              "clinical_question": "咳嗽", "requesting_physician": "李^医生", "scheduled_at": "2099-01-01T09:00:00Z"}
REFERRAL_BODY = {"target_organization": "county-hospital", "department": "心内科", "reason": "胸痛待查",
                 "study_uids": [CG_CT]}
SLOT = {"start": "2099-01-01T09:00:00Z", "end": "2099-01-01T10:00:00Z"}
NEW_TEMPLATE = {"id": "knee-dr", "name": "膝关节正侧位DR", "kind": "imaging", "modalities": ["DX"], "body_part": "KNEE",
                "sections": {"findings": {"title": "影像所见", "normal": "膝关节诸骨骨质未见异常。"},
                             "impression": {"title": "诊断意见", "normal": "膝关节未见明显异常。"}}}


def endpoints(ids: dict[str, str]) -> list[tuple[str, str, dict | None]]:
    rid, study, report, cons, order = ids["rid"], ids["study"], ids["report"], ids["cons"], ids["order"]
    ref = ids["ref"]
    return [
        ("GET", "/api/v1/me", None),
        ("POST", "/api/v1/auth/revoke", {}),
        ("GET", "/api/v1/session", None),
        ("DELETE", "/api/v1/session", None),
        # users and passwords (docs/desks.md)
        ("GET", "/api/v1/users", None),
        ("POST", "/api/v1/users", {"id": "dr-ma", "name": "马丽", "role": "clinic", "organization": "chengguan-thc"}),
        ("PATCH", "/api/v1/users/dr-li", {"disabled": True}),
        ("PUT", "/api/v1/users/dr-li/password", {"password": "long-enough-password"}),
        ("GET", "/api/v1/studies", None),
        ("GET", "/api/v1/gateway/refusals", None),  # what the gateway turned away (the clinic's desk)
        ("GET", f"/api/v1/studies/{study}", None),
        ("GET", f"/api/v1/studies/{study}/priors", None),
        # patient identity across the consortium (docs/identity.md)
        ("GET", f"/api/v1/studies/{study}/identity-suggestions", None),
        ("POST", f"/api/v1/studies/{study}/identity-links", {"organization": "hongmiao-thc", "patient_id": "HM778"}),
        ("DELETE", f"/api/v1/studies/{study}/identity-links/hongmiao-thc/HM778", None),
        *[("GET", f"/api/v1/studies/{study}/instances/{ids['instance']}/ecg{tail}", None)  # ECG reading view
          for tail in ("", ".svg", ".png", "/measurements")],
        ("POST", "/api/v1/reading-requests", {"study_uid": study, "kind": "ecg", "priority": "stat",
                                              "clinical_question": "胸痛"}),
        ("GET", "/api/v1/reading-requests", None),
        ("GET", f"/api/v1/reading-requests/{rid}", None),
        ("POST", f"/api/v1/reading-requests/{rid}/cancel", {"reason": "duplicate"}),
        ("POST", f"/api/v1/reading-requests/{rid}/claim", {}),
        ("POST", f"/api/v1/reading-requests/{rid}/renew", {}),
        ("POST", f"/api/v1/reading-requests/{rid}/release", {}),
        ("PUT", f"/api/v1/reading-requests/{rid}/draft", {"findings": "x", "impression": "y"}),
        ("POST", f"/api/v1/reading-requests/{rid}/sign", {"findings": "x", "impression": "y"}),
        ("POST", f"/api/v1/reading-requests/{rid}/escalate", {"reason": "second opinion"}),
        ("POST", f"/api/v1/reading-requests/{rid}/return", {"reason_code": "image_quality"}),
        ("POST", f"/api/v1/reading-requests/{rid}/move", {"centre": "city-imaging", "reason": "load"}),
        ("POST", f"/api/v1/reading-requests/{rid}/assign", {"reader_id": "dr-li", "reason": "load"}),
        # two-level sign-off and report versions (docs/reports.md)
        ("PUT", f"/api/v1/reading-requests/{rid}/review", {"impression": "y"}),
        ("POST", f"/api/v1/reading-requests/{rid}/countersign", {}),
        ("POST", f"/api/v1/reading-requests/{rid}/send-back", {"comment": "more views"}),
        ("GET", f"/api/v1/reading-requests/{rid}/versions", None),
        ("GET", f"/api/v1/reports/{report}/versions", None),
        # report templates
        ("GET", "/api/v1/report-templates", None),
        ("POST", "/api/v1/report-templates", NEW_TEMPLATE),
        ("GET", "/api/v1/report-templates/chest-dr-pa", None),
        ("PUT", "/api/v1/report-templates/chest-dr-pa", {k: v for k, v in NEW_TEMPLATE.items() if k != "id"}),
        ("GET", "/api/v1/report-templates/chest-dr-pa/versions", None),
        ("GET", "/api/v1/worklist", None),
        ("GET", "/api/v1/worklist/stream", None),
        ("GET", "/api/v1/queues", None),
        ("GET", "/api/v1/reports", None),
        ("GET", f"/api/v1/reports/{report}", None),
        ("GET", f"/api/v1/reports/{report}/verification", None),
        ("GET", f"/api/v1/reports/{report}/document", None),
        ("POST", f"/api/v1/reports/{report}/addenda", {"text": "correction"}),
        ("PUT", f"/api/v1/reports/{report}/addenda/review", {"text": "correction"}),
        ("POST", f"/api/v1/reports/{report}/addenda/countersign", {}),
        ("POST", f"/api/v1/reports/{report}/addenda/send-back", {"comment": "more detail"}),
        ("GET", "/api/v1/consortium", None),
        ("GET", "/api/v1/audit", None),
        ("GET", "/api/v1/audit/verification", None),
        # records custody: deletion under retention, sealing (封存)
        ("DELETE", f"/api/v1/studies/{study}", None),
        ("DELETE", f"/api/v1/reports/{report}", None),
        ("POST", "/api/v1/seals", {"organization": "chengguan-thc", "patient_id": "CG001", "reason": "x"}),
        ("GET", "/api/v1/seals", None),
        ("GET", "/api/v1/seals/seal-x", None),
        ("GET", "/api/v1/seals/seal-x/verification", None),
        ("POST", "/api/v1/seals/seal-x/unseal", {"reason": "x"}),
        # live queue monitor (services/monitor)
        ("GET", "/api/v1/monitor/centres", None),
        ("GET", "/api/v1/monitor/centres/county-imaging", None),
        ("GET", "/api/v1/monitor/sites", None),
        ("GET", "/api/v1/monitor/consortium", None),
        ("GET", "/api/v1/monitor/metrics", None),
        ("GET", "/api/v1/monitor/stream", None),
        # the consortium's figures and settlement (services/monitor)
        ("GET", "/api/v1/figures", None),
        ("GET", "/api/v1/figures/trend", None),
        ("GET", "/api/v1/figures/export", None),
        ("GET", "/api/v1/settlement/statements", None),
        ("GET", "/api/v1/settlement/ledger", None),
        ("GET", "/api/v1/settlement/reconciliation", None),
        ("GET", "/api/v1/settlement/export", None),
        ("POST", "/api/v1/settlement/months/2026-01/close", {}),
        ("POST", "/api/v1/settlement/entries/E/void", {"reason": "x"}),
        # remote consultation
        ("POST", "/api/v1/consultations", CONSULTATION_BODY),
        ("GET", "/api/v1/consultations", None),
        ("GET", f"/api/v1/consultations/{cons}", None),
        ("GET", f"/api/v1/consultations/{cons}/case", None),
        ("POST", f"/api/v1/consultations/{cons}/withdraw", {"reason": "resolved"}),
        ("POST", f"/api/v1/consultations/{cons}/triage", {"note": "ok"}),
        ("POST", f"/api/v1/consultations/{cons}/schedule", {**SLOT, "specialists": ["dr-wang"]}),
        ("POST", f"/api/v1/consultations/{cons}/reschedule", {**SLOT, "reason": "clash"}),
        ("POST", f"/api/v1/consultations/{cons}/cancel", {"reason": "duplicate"}),
        ("POST", f"/api/v1/consultations/{cons}/start", {}),
        ("GET", f"/api/v1/consultations/{cons}/notes", None),
        ("POST", f"/api/v1/consultations/{cons}/notes", {"text": "note"}),
        ("POST", f"/api/v1/consultations/{cons}/opinion", {"assessment": "x", "recommendations": {
            "disposition": "manage_locally", "plan": "y"}}),
        # exam requests (申请管理)
        ("POST", "/api/v1/orders", ORDER_BODY),
        ("GET", "/api/v1/orders", None),
        ("GET", f"/api/v1/orders/{order}", None),
        ("POST", f"/api/v1/orders/{order}/change", {"changes": {"priority": "stat"}}),
        ("POST", f"/api/v1/orders/{order}/cancel", {"reason": "duplicate"}),
        # two-way referral (双向转诊) and reserved slots (docs/referral.md)
        ("POST", "/api/v1/referrals", REFERRAL_BODY),
        ("GET", "/api/v1/referrals", None),
        ("GET", f"/api/v1/referrals/{ref}", None),
        ("GET", f"/api/v1/referrals/{ref}/trace", None),
        ("GET", f"/api/v1/referrals/{ref}/case", None),
        ("GET", f"/api/v1/referrals/{ref}/letter.pdf", None),
        ("POST", f"/api/v1/referrals/{ref}/book", {"slot_id": "sl|x"}),
        ("POST", f"/api/v1/referrals/{ref}/accept", {}),
        ("POST", f"/api/v1/referrals/{ref}/refuse", {"reason": "full"}),
        ("POST", f"/api/v1/referrals/{ref}/cancel", {"reason": "duplicate"}),
        ("POST", f"/api/v1/referrals/{ref}/arrive", {}),
        ("POST", f"/api/v1/referrals/{ref}/complete", {}),
        ("POST", f"/api/v1/referrals/{ref}/refer-down", {"diagnosis": "x", "treatment_summary": "y", "plan": {
            "follow_ups": [{"date": "2099-01-02", "what": "z"}]}}),
        ("POST", f"/api/v1/referrals/{ref}/follow-up", {"date": "2099-01-02"}),
        ("GET", "/api/v1/referral-slots", None),
        ("POST", "/api/v1/referral-slots", {"department": "心内科", "slots": [SLOT]}),
        ("GET", "/api/v1/monitor/referrals", None),
        # 结果互认
        ("GET", "/api/v1/recognition/items", None),
        ("POST", "/api/v1/recognition/check", {"patient_id": "CG001", "modality": "CT", "body_part": "CHEST"}),
        ("POST", "/api/v1/recognition/decisions", {"patient_id": "CG001", "modality": "CT", "body_part": "CHEST",
                                                   "prior_study_uid": CG_CT}),
        # result delivery: the clinic's inbox (a result's id is its report's), live push, dead letters
        ("GET", "/api/v1/results", None),
        ("GET", "/api/v1/results/stream", None),
        ("GET", f"/api/v1/results/{report}", None),
        ("GET", f"/api/v1/results/{report}/pdf", None),  # the desk's print
        ("POST", f"/api/v1/results/{report}/acknowledge", {}),
        ("GET", "/api/v1/deliveries/dead-letters", None),
        ("POST", "/api/v1/deliveries/D/redrive", {}),
        # image quality grading and peer review (docs/quality.md); pr-X: a review nobody sampled
        ("PUT", f"/api/v1/reading-requests/{rid}/quality", {"grade": "B", "reasons": ["exposure"]}),
        ("GET", "/api/v1/quality/rates", None),
        ("GET", "/api/v1/peer-reviews", None),
        ("GET", "/api/v1/peer-reviews/stats", None),
        ("POST", "/api/v1/peer-reviews/pr-X/assign", {"reviewer": "dr-chen"}),
        ("POST", "/api/v1/peer-reviews/pr-X/score", {"score": 1}),
        ("POST", "/api/v1/peer-reviews/pr-X/arbitrate", {"upheld": False, "comment": "x"}),
        # duty rosters (排班管理)
        ("PUT", "/api/v1/centres/county-imaging/roster", {"start": "2099-01-01T00:00:00+08:00",
                                                          "end": "2099-01-02T00:00:00+08:00", "shifts": []}),
        ("GET", "/api/v1/centres/county-imaging/roster", None),
        ("GET", "/api/v1/on-duty", None),
        # township edges (前置机)
        ("POST", f"/api/v1/edge/studies/{study}/complete", {"instances": 1}),
        ("POST", "/api/v1/edge/heartbeat", {"backlog_studies": 0}),
        ("GET", "/api/v1/edges", None),
        ("GET", f"/api/v1/results/{report}/objects", None),  # a result's SR and PDF for the clinic's terminal
        ("POST", f"/api/v1/edge/results/{report}/delivered", {"terminal": "CG_TERM@192.168.1.20:104",
                                                             "sop_instance_uids": ["1.2.3", "1.2.4"]}),
        ("GET", "/api/v1/edge/worklist", None),
        ("POST", "/api/v1/edge/procedure-steps", {"sop_instance_uid": "1.2.3", "status": "COMPLETED",
                                                  "calling_ae": "CG_CT1"}),
    ]


# Endpoints that name a patient's resource by id (the ones a guesser would try).
BY_ID = [e for e in endpoints({"rid": "R", "study": "S", "report": "P", "cons": "C", "instance": "N", "order": "O",
                               "ref": "F"})
         if any(x in e[1] for x in ("/R", "/S", "/P", "/C", "/O", "/F"))]


async def snapshot(api) -> dict[str, list]:
    out = {}
    for collection in ("reading_requests", "reports", "studies", "revoked_tokens", "consultations",
                       "consultation_notes", "bookings", "seals", "instances", "orders", "users", "sessions",
                       "quality_gradings", "peer_reviews", "shifts", "referrals", "referral_slots"):
        out[collection] = sorted(await api.rt.store.find(collection), key=lambda d: d["id"])
    return out


def assert_problem(body, status: int, path: str) -> None:
    assert set(body) >= {"type", "title", "status", "detail", "instance"}, body
    assert body["status"] == status and body["instance"] == path.split("?")[0] and body["detail"]


async def test_matrix_covers_every_route(api):
    ids = {"rid": "R", "study": "S", "report": "P", "cons": "C", "instance": "N", "order": "O", "ref": "F"}
    listed = {(m, p.replace("/R", "/{request_id}").replace("/S", "/{study_uid}").replace("/P", "/{report_id}")
               .replace("/N", "/{sop_instance_uid}")
               .replace("/C", "/{consultation_id}").replace("/O", "/{order_id}").replace("/F", "/{referral_id}")
               .replace("/results/{report_id}", "/results/{result_id}")
               .replace("/deliveries/D/", "/deliveries/{delivery_id}/")
               .replace("/seals/seal-x", "/seals/{seal_id}")
               .replace("/pr-X", "/{review_id}")
               .replace("/centres/county-imaging/roster", "/centres/{centre}/roster")
               .replace("/monitor/centres/county-imaging", "/monitor/centres/{centre}")
               .replace("/chest-dr-pa", "/{template_id}")
               .replace("/users/dr-li", "/users/{user_id}")
               .replace("/identity-links/hongmiao-thc/HM778", "/identity-links/{organization}/{patient_id}")
               .replace("/months/2026-01/", "/months/{month}/").replace("/entries/E/", "/entries/{entry}/")
               ) for m, p, _ in endpoints(ids)}
    routes = {(r.method, r.resource.canonical) for r in api.service._runner.app.router.routes()
              if r.method != "HEAD" and r.resource.canonical not in PUBLIC
              and (r.method, r.resource.canonical) not in PUBLIC_OPERATIONS
              and not is_page(r.resource.canonical)  # pages send a stranger to /signin: tests/desks/test_security
              and not r.resource.canonical.startswith("/dicomweb")}  # PS3.18's own matrix: tests/dicomweb
    assert routes == listed


@pytest.mark.parametrize("credential", ["none", "not-bearer", "malformed", "other-secret", "expired",
                                        "revoked", "unknown-user"])
async def test_bad_credentials_get_401_everywhere_and_change_nothing(api, credential):
    ids = await scenario(api)
    tokens = {
        "none": None,
        "not-bearer": "Basic Y2ctY2xpbmljOnB3",
        "malformed": "Bearer not.a.jwt",
        "other-secret": "Bearer " + issue_token(api.rt.consortium, "admin", "another-secret-" + "y" * 32),
        "expired": "Bearer " + api.token("admin", ttl=-5),
        "unknown-user": None,
    }
    if credential == "revoked":
        token = api.token("admin", ttl=600)
        status, _, _ = await api.call("POST", "/api/v1/auth/revoke", token=token)
        assert status == 200
        tokens["revoked"] = "Bearer " + token
    if credential == "unknown-user":
        now = int(time.time())
        tokens["unknown-user"] = "Bearer " + jwt.encode(
            {"iss": "yilian", "sub": "mallory", "role": "admin", "org": "county-hospital", "iat": now,
             "exp": now + 60, "jti": "x"}, "test-secret-" + "x" * 32, algorithm="HS256")
    before = await snapshot(api)
    for method, path, body in endpoints(ids):
        headers = {"Authorization": tokens[credential]} if tokens[credential] else {}
        status, problem, resp_headers = await api.call(method, path, json=body, headers=headers)
        assert status == 401, (credential, method, path, status, problem)
        assert 'error="invalid_token"' in resp_headers["WWW-Authenticate"]
        assert resp_headers["Content-Type"].startswith("application/problem+json")
        assert_problem(problem, 401, path)
    assert await snapshot(api) == before


async def test_another_clinics_ids_are_404_and_change_nothing(api):
    ids = await scenario(api)
    before = await snapshot(api)
    for user in ("db-clinic", "zz-clinic"):
        for method, path, body in endpoints(ids):
            if not any(ids[k] in path for k in ids):
                continue  # (a reading request names its study in the body: below)
            if path.startswith("/api/v1/edge/") or path.endswith("/objects"):
                continue  # the edge's role alone: another clinic's edge is below
            status, problem, _ = await api.call(method, path, user=user, json=body)
            assert status == 404, (user, method, path, status, problem)
            assert_problem(problem, 404, path)
    # guessing: an id that exists and one that does not are indistinguishable
    _, real, _ = await api.call("GET", f"/api/v1/reading-requests/{ids['rid']}", user="db-clinic")
    _, fake, _ = await api.call("GET", "/api/v1/reading-requests/rr-doesnotexist", user="db-clinic")
    assert {k for k in real} == {k for k in fake} and real["title"] == fake["title"]
    # lists show only its own
    assert (await api.ok("GET", "/api/v1/studies", "db-clinic"))["items"][0]["organization"] == "dongba-thc"
    assert all(s["organization"] == "dongba-thc" for s in (await api.ok("GET", "/api/v1/studies", "db-clinic"))["items"])
    assert (await api.ok("GET", "/api/v1/reading-requests", "db-clinic"))["items"] == []
    assert (await api.ok("GET", "/api/v1/reports", "db-clinic"))["items"] == []
    assert await snapshot(api) == before


async def test_an_edge_cannot_complete_another_clinics_study(api):
    """An edge answers for its clinic only: another clinic's study is as unknown as a made-up UID,
    and its STOW-RS hold cannot keep another clinic's study from being announced."""
    await scenario(api)
    path = "/api/v1/edge/studies/{}/complete"
    status, other, _ = await api.call("POST", path.format("1.2.826.0.1.200.1"), user="cg-edge", json={"instances": 1})
    _, unknown, _ = await api.call("POST", path.format("1.2.826.0.1.999.9"), user="cg-edge", json={"instances": 1})
    assert status == 404 and other["title"] == unknown["title"] and set(other) == set(unknown)
    status, done, _ = await api.call("POST", path.format(CG_CT), user="cg-edge", json={"instances": 1})
    assert status == 200 and done["study_uid"] == CG_CT


async def test_an_edge_gets_only_its_clinics_results(api):
    """Another clinic's result behind its own edge is as unknown to this edge as a made-up id: no
    objects, no acknowledgement, the same answer field for field."""
    result = {"id": "rp-dongba", "organization": "dongba-thc", "centre": "county-imaging", "critical": False,
              "created_at": "2030-01-01T00:00:00.000Z", "sr_sop_instance_uid": "1.2.3", "pdf_sop_instance_uid": "1.2.4"}
    async with api.rt.store.transaction() as tx:
        await tx.insert("results", {**result, "version": 0})
        await tx.insert("deliveries", new_delivery(result, "edge", {"ae_title": "DB_TERM", "host": "10.0.0.9",
                                                                    "port": 104}, at=result["created_at"]))
    answers = []
    for rid in ("rp-dongba", "rp-unknown"):
        status, objects, _ = await api.call("GET", f"/api/v1/results/{rid}/objects", user="cg-edge")
        _, acked, _ = await api.call("POST", f"/api/v1/edge/results/{rid}/delivered", user="cg-edge", json={
            "terminal": "CG_TERM@192.168.1.20:104", "sop_instance_uids": ["1.2.3", "1.2.4"]})
        assert status == 404 and acked["status"] == 404
        answers.append([{k: v.replace(rid, "ID") for k, v in doc.items() if isinstance(v, str)}
                        for doc in (objects, acked)])
    assert answers[0] == answers[1]
    assert (await api.rt.store.get("deliveries", new_delivery(result, "edge", {}, at="")["id"]))["state"] == "pending"


async def test_another_clinics_study_uid_is_answered_like_an_unknown_one(api):
    """No existence oracle: naming another clinic's Study UID (which even has an open request of
    the same kind) or a UID nobody has sent gets the same answer, field for field."""
    await scenario(api)
    unknown = "1.2.826.0.1.100.999"
    answers = []
    for uid in (CG_DX, unknown):
        status, doc, _ = await api.call("POST", "/api/v1/reading-requests", user="db-clinic", json={
            "study_uid": uid, "kind": "imaging", "priority": "stat", "clinical_question": "?"})
        assert status == 201, doc
        answers.append({k: v for k, v in doc.items()
                        if k not in ("id", "study_uid", "history", "requested_at", "updated_at")})
        assert doc["state"] == "requested" and doc["organization"] == "dongba-thc" and doc["patient_name"] is None
    assert answers[0] == answers[1]
    # a consultation attaching one or the other: the same refusal
    refusals = []
    for uid in (CG_DX, unknown):
        status, problem, _ = await api.call("POST", "/api/v1/consultations", user="db-clinic",
                                            json={**CONSULTATION_BODY, "study_uids": [uid]})
        refusals.append((status, {k: v.replace(uid, "UID") for k, v in problem.items() if isinstance(v, str)}))
    assert refusals[0] == refusals[1] and refusals[0][0] == 404


async def test_another_centres_reader_and_coordinator_get_404_and_change_nothing(api):
    ids = await scenario(api)
    before = await snapshot(api)
    for user in ("dr-chen", "dr-zhao", "coord-city"):  # city-imaging, county-ecg, city-imaging
        for method, path, body in endpoints(ids):
            if not any(ids[k] in path for k in ids):
                continue  # (a reading request names its study in the body: below)
            status, problem, _ = await api.call(method, path, user=user, json=body)
            assert status in (403, 404), (user, method, path, status)
            if method == "GET" and path.endswith("/objects"):
                continue  # the edge's role alone (403 whatever the id): test_an_edge_gets_only_its_clinics_results
            if method == "GET" or "/reading-requests/" in path or "/reports/" in path:
                assert status == 404, (user, method, path, status, problem)
        assert (await api.ok("GET", "/api/v1/worklist", user))["items"] == []
        assert (await api.ok("GET", "/api/v1/reading-requests", user))["items"] == []
    assert await snapshot(api) == before


async def test_same_centre_but_not_the_holder_is_refused(api):
    ids = await scenario(api)
    before = await snapshot(api)
    for method, action, body in (("POST", "renew", {}), ("POST", "release", {}), ("POST", "sign", {}),
                                 ("PUT", "draft", {"findings": "x", "impression": "y"}),
                                 ("POST", "escalate", {"reason": "r"}), ("POST", "claim", {}),
                                 ("PUT", "quality", {"grade": "reject", "reasons": ["motion"]})):
        status, problem, _ = await api.call(method, f"/api/v1/reading-requests/{ids['rid']}/{action}",
                                            user="dr-li", json=body)
        assert status == 409, (action, status, problem)
    assert await snapshot(api) == before


ROLE_ONLY = [  # (endpoint, users refused with 403: the endpoint is public knowledge, the role may not)
    (("GET", "/api/v1/worklist"), ("cg-clinic", "admin", "auditor")),
    (("GET", "/api/v1/queues"), ("cg-clinic", "dr-wang", "auditor")),
    (("GET", "/api/v1/studies"), ("dr-wang", "coord-county", "auditor")),
    (("GET", "/api/v1/gateway/refusals"), ("dr-wang", "coord-county", "auditor")),
    (("GET", "/api/v1/consortium"), ("cg-clinic", "dr-wang", "coord-county", "auditor")),
    (("GET", "/api/v1/audit"), ("cg-clinic", "dr-wang", "coord-county")),
    (("GET", "/api/v1/audit/verification"), ("cg-clinic", "dr-wang", "coord-county")),
    (("GET", "/api/v1/seals"), ("cg-clinic", "dr-wang", "coord-county")),
    (("GET", "/api/v1/monitor/centres"), ("cg-clinic", "dr-wang", "auditor")),
    (("GET", "/api/v1/monitor/stream"), ("cg-clinic", "dr-wang", "auditor")),
    (("GET", "/api/v1/monitor/sites"), ("cg-clinic", "dr-wang", "coord-county", "auditor")),
    (("GET", "/api/v1/monitor/consortium"), ("cg-clinic", "dr-wang", "coord-county", "auditor")),
    (("GET", "/api/v1/monitor/metrics"), ("cg-clinic", "dr-wang", "coord-county", "auditor")),
    (("GET", "/api/v1/settlement/statements"), ("dr-wang", "coord-county")),
    (("GET", "/api/v1/settlement/reconciliation"), ("cg-clinic", "dr-wang", "coord-county")),
    (("POST", "/api/v1/settlement/months/2026-01/close"), ("cg-clinic", "dr-wang", "coord-county", "auditor")),
    (("GET", "/api/v1/monitor/referrals"), ("cg-clinic", "county-cardio", "dr-wang", "auditor")),
    (("POST", "/api/v1/recognition/check"), ("dr-wang", "coord-county", "admin", "auditor")),
    (("GET", "/api/v1/recognition/items"), ("auditor",)),
    (("GET", "/api/v1/reading-requests"), ("auditor",)),
    (("GET", "/api/v1/worklist/stream"), ("cg-clinic", "auditor", "admin")),
    (("GET", "/api/v1/users"), ("cg-clinic", "dr-wang", "coord-county", "auditor")),
    (("POST", "/api/v1/users"), ("cg-clinic", "dr-wang", "coord-county", "auditor")),
    (("PATCH", "/api/v1/users/dr-li"), ("cg-clinic", "dr-wang", "coord-county", "auditor")),
    (("PUT", "/api/v1/users/dr-li/password"), ("cg-clinic", "dr-wang", "coord-county", "auditor")),
    (("GET", "/api/v1/reports"), ("auditor",)),
    (("GET", "/api/v1/quality/rates"), ("auditor",)),
    (("GET", "/api/v1/peer-reviews"), ("cg-clinic", "auditor")),
    (("GET", "/api/v1/peer-reviews/stats"), ("cg-clinic", "auditor")),
    (("POST", "/api/v1/peer-reviews/pr-X/score"), ("cg-clinic", "coord-county", "admin", "auditor")),
    (("POST", "/api/v1/peer-reviews/pr-X/arbitrate"), ("cg-clinic", "coord-county", "admin", "auditor")),
    (("POST", "/api/v1/peer-reviews/pr-X/assign"), ("cg-clinic", "dr-wang", "auditor")),
    (("PUT", "/api/v1/centres/county-imaging/roster"), ("cg-clinic", "dr-wang", "auditor")),
    (("GET", "/api/v1/centres/county-imaging/roster"), ("cg-clinic", "auditor")),
    (("GET", "/api/v1/on-duty"), ("cg-clinic", "auditor")),
    # an edge is a machine of one clinic: it forwards and reports its backlog, nothing else
    (("POST", "/api/v1/edge/heartbeat"), ("cg-clinic", "dr-wang", "coord-county", "admin", "auditor")),
    (("GET", "/api/v1/edges"), ("cg-clinic", "cg-edge", "dr-wang", "auditor")),
    (("GET", "/api/v1/results/P/objects"), ("cg-clinic", "dr-wang", "coord-county", "admin", "auditor")),
    (("POST", "/api/v1/edge/results/P/delivered"), ("cg-clinic", "dr-wang", "coord-county", "admin", "auditor")),
    (("GET", "/api/v1/edge/worklist"), ("cg-clinic", "dr-wang", "coord-county", "admin", "auditor")),
    (("POST", "/api/v1/edge/procedure-steps"), ("cg-clinic", "dr-wang", "coord-county", "admin", "auditor")),
    (("GET", "/api/v1/studies"), ("cg-edge",)),
    (("GET", "/api/v1/results"), ("cg-edge",)),
    (("GET", "/api/v1/reading-requests"), ("cg-edge",)),
    (("GET", "/api/v1/orders"), ("cg-edge",)),
    (("GET", "/api/v1/audit"), ("cg-edge",)),
]


@pytest.mark.parametrize("endpoint,users", ROLE_ONLY)
async def test_roles_outside_an_endpoint_get_403(api, endpoint, users):
    for user in users:
        status, problem, _ = await api.call(*endpoint, user=user)
        assert status == 403, (endpoint, user, status)
        assert_problem(problem, 403, endpoint[1])


async def test_role_may_not_do_the_command_on_what_it_sees(api):
    ids = await scenario(api)
    before = await snapshot(api)
    # the clinic sees its request but may not claim or sign it; the auditor sees nothing
    for user, status in (("cg-clinic", 403), ("auditor", 403)):
        got, _, _ = await api.call("POST", f"/api/v1/reading-requests/{ids['rid']}/sign", user=user,
                                   json={"findings": "x", "impression": "y"})
        assert got == status, (user, got)
    got, _, _ = await api.call("GET", f"/api/v1/studies/{ids['study']}", user="auditor")
    assert got == 403
    assert await snapshot(api) == before


async def test_revocation_takes_effect_on_the_next_request(api):
    token = api.token("cg-clinic", ttl=600)
    assert (await api.call("GET", "/api/v1/me", token=token))[0] == 200
    status, body, _ = await api.call("POST", "/api/v1/auth/revoke", token=token, json={"reason": "lost laptop"})
    assert status == 200 and body["revoked"]
    status, problem, headers = await api.call("GET", "/api/v1/me", token=token)
    assert status == 401 and problem["detail"] == "token revoked"
    # another of the user's tokens still works
    assert (await api.call("GET", "/api/v1/me", token=api.token("cg-clinic", ttl=600)))[0] == 200


async def test_only_an_admin_revokes_someone_elses_token(api):
    victim = api.token("dr-wang", ttl=600)
    _, me, _ = await api.call("GET", "/api/v1/me", token=victim)
    status, problem, _ = await api.call("POST", "/api/v1/auth/revoke", user="cg-clinic",
                                        json={"token_id": me["token_id"]})
    assert status == 403
    assert (await api.call("GET", "/api/v1/me", token=victim))[0] == 200
    await api.ok("POST", "/api/v1/auth/revoke", "admin", {"token_id": me["token_id"]})
    assert (await api.call("GET", "/api/v1/me", token=victim))[0] == 401
    assert (await api.call("GET", "/api/v1/me", user="admin"))[0] == 200


async def test_public_paths_need_no_token(api):
    for path in ("/healthz", "/readyz", "/api/v1/openapi.json"):
        status, _, _ = await api.call("GET", path)
        assert status == 200, path
