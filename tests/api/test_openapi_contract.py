"""``schemas/openapi.yaml`` is true to the code: (a) every route the aiohttp app serves is in the
document and every operation of the document is served; (b) every answer of a real flow —
request, claim, draft, sign, addendum, results, consultations, deliveries, monitor, DICOMweb,
and the errors on the way — has a documented status code, a documented media type, and a body
that validates against the documented schema."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from services.api.validation import spec
from services.delivery.model import new_delivery
from services.delivery.service import DELIVERIES, on_report_signed
from services.monitor.service import MonitorService
from services.workflow import template_store
from services.workflow.context import SETTINGS_KEY
from services.workflow.leases import WorkflowSettings, parse_iso

from ..desks.support import PASSWORD, set_password
from ..dicomweb.helpers import STOW_TYPE, multipart, sample_files
from ..support import ManualClock
from .conftest import api  # noqa: F401 - the fixture
from .test_records import file_instances

METHODS = ("get", "put", "post", "delete", "patch")
CG_CT = "1.2.826.0.1.100.1"
URI = "urn:yilian:openapi"


def test_no_key_of_the_document_is_empty():
    """A comma in an unquoted flow-style value (``{description: a, b}``) makes YAML read a stray
    key ``b`` with no value: the document then says something other than what was written."""
    def empty(node: Any, path: str) -> list[str]:
        if isinstance(node, dict):
            return [f"{path}/{k}" for k, v in node.items() if v is None] + \
                [p for k, v in node.items() for p in empty(v, f"{path}/{k}")]
        if isinstance(node, list):
            return [p for i, v in enumerate(node) for p in empty(v, f"{path}/{i}")]
        return []
    assert empty(spec(), "") == []


def test_libyaml_reads_the_document_as_the_pure_python_parser_does():
    import yaml

    from services.api import validation
    if validation._SAFE_LOADER is yaml.SafeLoader:
        pytest.skip("PyYAML without libyaml: only the pure-Python parser")
    assert yaml.safe_load(validation.SPEC_PATH.read_text("utf-8")) == spec()


async def test_every_route_is_documented_and_every_operation_is_served(api):  # noqa: F811
    served = {(r.method, r.resource.canonical) for r in api.service._runner.app.router.routes() if r.method != "HEAD"}
    documented = {(m.upper(), p) for p, item in spec()["paths"].items() for m in item if m in METHODS}
    assert sorted(served - documented) == [], "served, not documented"
    assert sorted(documented - served) == [], "documented, not served"


class Contract:
    """Checks one answer against the operation the document gives for its method and path."""

    def __init__(self) -> None:
        self.doc = spec()
        self.registry = Registry().with_resource(URI, Resource.from_contents(self.doc,
                                                                             default_specification=DRAFT202012))
        self.templates = sorted(((p, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", re.escape(p)
                                                             .replace(r"\{", "{").replace(r"\}", "}")) + "$"))
                                 for p in self.doc["paths"]), key=lambda t: -len(re.sub(r"\{[^}]+\}", "", t[0])))
        self.checked: set[tuple[str, str, int]] = set()
        self.errors: list[str] = []

    def _resolve(self, obj: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in obj:
            node: Any = self.doc
            for part in obj["$ref"].lstrip("#/").split("/"):
                node = node[part]
            obj = node
        return obj

    def template(self, path: str) -> str:
        path = path.split("?")[0]
        for template, pattern in self.templates:
            if pattern.match(path):
                return template
        raise AssertionError(f"{path} matches no documented path")

    def check(self, method: str, path: str, status: int, content_type: str, body: bytes) -> None:
        """Record what differs from the document (all of a flow's differences are reported at once)."""
        try:
            self._check(method, path, status, content_type, body)
        except AssertionError as exc:
            self.errors.append(str(exc).splitlines()[0])

    def _check(self, method: str, path: str, status: int, content_type: str, body: bytes) -> None:
        template = self.template(path)
        operation = self.doc["paths"][template].get(method.lower())
        assert operation is not None, f"{method} {template} is not documented"
        responses = operation["responses"]
        assert str(status) in responses, f"{method} {template} answered {status}, documented: {sorted(responses)}"
        self.checked.add((method, template, status))
        content = self._resolve(responses[str(status)]).get("content")
        if not content or status in (204, 303):
            return
        media = content_type.split(";")[0].strip().lower()
        assert media in content, f"{method} {template} {status}: {media} is not documented ({sorted(content)})"
        schema = content[media].get("schema")
        if schema is None or not media.endswith("json"):
            return
        instance = json.loads(body)
        wrapped = {"$ref": URI + schema["$ref"]} if "$ref" in schema else schema
        errors = sorted(Draft202012Validator(wrapped, registry=self.registry).iter_errors(instance),
                        key=lambda e: list(map(str, e.absolute_path)))
        assert not errors, f"{method} {template} {status}: " + "; ".join(
            f"/{'/'.join(map(str, e.absolute_path))}: {e.message[:160]}" for e in errors[:4])


@pytest.fixture
def contract(api):  # noqa: F811
    """Every call of ``api.call`` (and so ``api.ok``) is checked against the document."""
    checker = Contract()
    call = api.call

    async def checked(method: str, path: str, **kw: Any) -> tuple[int, Any, Any]:
        headers = dict(kw.pop("headers", None) or {})
        if kw.get("user") is not None:
            headers["Authorization"] = f"Bearer {api.token(kw.pop('user'))}"
        else:
            kw.pop("user", None)
        async with api.session.request(method, api.base + path, json=kw.get("json"), data=kw.get("data"),
                                       headers=headers, allow_redirects=False) as resp:
            raw = await resp.read()
            checker.check(method, path, resp.status, resp.headers.get("Content-Type", ""), raw)
            body = json.loads(raw) if resp.content_type.endswith("json") and raw else raw
            return resp.status, body, resp.headers

    api.call = checked
    yield checker
    api.call = call
    assert checker.errors == [], "\n".join(dict.fromkeys(checker.errors))


async def test_a_whole_flow_answers_as_documented(api, contract):  # noqa: F811
    clock = ManualClock(parse_iso("2030-01-01T00:00:00Z"))
    api.rt.shared[SETTINGS_KEY] = WorkflowSettings(clock=clock)
    monitor = MonitorService(api.rt)

    async def call(method: str, path: str, user: str | None = None, body: Any = None, **kw: Any) -> Any:
        return await api.call(method, path, user=user, json=body, **kw)

    # public
    for path in ("/", "/healthz", "/readyz", "/api/v1/openapi.json", "/metrics", "/dashboard"):
        await call("GET", path)
    await call("GET", "/", headers={"Accept": "text/html"})
    await call("GET", "/api/v1/me", "cg-clinic")
    await call("GET", "/api/v1/me")  # 401

    # a reading: request, claim, renew, draft, sign, addendum
    created = await api.ok("POST", "/api/v1/reading-requests", "cg-clinic", {
        "study_uid": CG_CT, "kind": "imaging", "priority": "urgent", "clinical_question": "胸痛",
        "green_channel": "胸痛"}, status=201)
    rid = created["id"]
    await call("POST", "/api/v1/reading-requests", "cg-clinic", {"study_uid": CG_CT})  # 422
    await call("POST", "/api/v1/reading-requests", "cg-clinic", {  # 409: already open
        "study_uid": CG_CT, "kind": "imaging", "priority": "urgent", "clinical_question": "胸痛"})
    await call("POST", "/api/v1/reading-requests", "cg-clinic", data=b"{", headers={"Content-Type": "application/json"})
    await call("GET", "/api/v1/studies", "cg-clinic")
    await call("GET", f"/api/v1/studies/{CG_CT}", "dr-wang")
    await call("GET", f"/api/v1/studies/{CG_CT}/priors", "dr-wang")
    # patient identity (docs/identity.md): a suggestion by name + birth date, confirmed by a person
    await call("GET", f"/api/v1/studies/{CG_CT}/identity-suggestions", "coord-county")
    await call("GET", f"/api/v1/studies/{CG_CT}/identity-suggestions", "dr-wang")  # 403
    await call("POST", f"/api/v1/studies/{CG_CT}/identity-links", "coord-county",
               {"organization": "hongmiao-thc", "patient_id": "HM778", "reason": "同一人, 电话核实"})
    await call("POST", f"/api/v1/studies/{CG_CT}/identity-links", "coord-county", {"organization": "x"})  # 422
    await call("POST", f"/api/v1/studies/{CG_CT}/identity-links", "coord-county",
               {"organization": "hongmiao-thc", "patient_id": "NOPE"})  # 404
    await call("DELETE", f"/api/v1/studies/{CG_CT}/identity-links/hongmiao-thc/HM778", "coord-county")  # undone
    await call("DELETE", f"/api/v1/studies/{CG_CT}/identity-links/hongmiao-thc/HM778", "coord-county")  # 404
    await call("GET", "/api/v1/worklist", "dr-wang")
    await call("GET", "/api/v1/worklist", "cg-clinic")  # 403
    await call("GET", "/api/v1/queues", "coord-county")
    await call("GET", "/api/v1/reading-requests", "cg-clinic")
    await call("GET", f"/api/v1/reading-requests/{rid}", "cg-clinic")
    await call("GET", "/api/v1/reading-requests/rr-nope", "cg-clinic")  # 404
    await call("POST", f"/api/v1/reading-requests/{rid}/sign", "dr-wang", {})  # 409 before the claim
    await api.ok("POST", f"/api/v1/reading-requests/{rid}/claim", "dr-wang")
    await api.ok("POST", f"/api/v1/reading-requests/{rid}/renew", "dr-wang")
    await api.ok("PUT", f"/api/v1/reading-requests/{rid}/draft", "dr-wang",
                 {"findings": "右下肺斑片影", "impression": "右下肺炎", "critical": True, "critical_category": "肺炎"})
    signed = await api.ok("POST", f"/api/v1/reading-requests/{rid}/sign", "dr-wang", {})
    report_id = signed["report_id"]
    await call("GET", "/api/v1/reports", "cg-clinic")
    await call("GET", f"/api/v1/reports/{report_id}", "cg-clinic")
    # no delivery service here: no signed PDF yet (the 200 is checked in tests/delivery/test_signature.py)
    await call("GET", f"/api/v1/reports/{report_id}/verification", "cg-clinic")
    await call("GET", f"/api/v1/reports/{report_id}/document", "cg-clinic")  # 404 likewise (200: test_signature)
    await api.ok("POST", f"/api/v1/reports/{report_id}/addenda", "dr-wang", {"text": "补充：两周后复查"}, status=201)
    await call("GET", f"/api/v1/reports/{report_id}", "cg-clinic")
    # a junior's addendum: submitted (202), edited, sent back, submitted again, countersigned
    await call("POST", f"/api/v1/reports/{report_id}/addenda", "dr-zhou", {"text": "补充：左肺小结节"})
    await call("PUT", f"/api/v1/reports/{report_id}/addenda/review", "dr-li", {"text": "补充：左肺下叶小结节"})
    await call("POST", f"/api/v1/reports/{report_id}/addenda/send-back", "dr-li", {"comment": "请注明层面"})
    await call("POST", f"/api/v1/reports/{report_id}/addenda/countersign", "dr-li", {})  # 409: none waits
    await call("POST", f"/api/v1/reports/{report_id}/addenda", "dr-zhou", {"text": "补充：左肺下叶背段小结节"})
    await call("POST", f"/api/v1/reports/{report_id}/addenda/countersign", "dr-li", {})

    # image quality and peer review (docs/quality.md): the critical report was sampled
    await api.ok("PUT", f"/api/v1/reading-requests/{rid}/quality", "dr-wang", {"grade": "B", "reasons": ["exposure"]})
    await call("PUT", f"/api/v1/reading-requests/{rid}/quality", "dr-wang", {"grade": "Z"})  # 422
    await call("GET", "/api/v1/quality/rates", "cg-clinic")
    await call("GET", "/api/v1/quality/rates?from=2030-13", "admin")  # 422
    await call("GET", "/api/v1/quality/rates", "auditor")  # 403
    review = f"/api/v1/peer-reviews/pr-{report_id}"
    await call("GET", "/api/v1/peer-reviews", "dr-li")
    await call("POST", f"{review}/assign", "coord-county", {"reviewer": "dr-wang"})  # 422: the author
    await api.ok("POST", f"{review}/assign", "coord-county", {"reviewer": "dr-chen"})
    await api.ok("POST", f"{review}/score", "dr-chen", {"score": 3, "clinically_significant": False, "comment": "漏描述"})
    await call("POST", f"{review}/score", "dr-chen", {"score": 1})  # 409
    await call("POST", f"{review}/arbitrate", "dr-wang", {"upheld": True, "comment": "x"})  # 403: the author
    await call("POST", f"{review}/arbitrate", "dr-li", {"upheld": True, "comment": "x"})  # 404: not his
    await call("GET", "/api/v1/peer-reviews/stats", "dr-wang")

    # the other reading commands
    other = await api.ok("POST", "/api/v1/reading-requests", "cg-clinic", {
        "study_uid": "1.2.826.0.1.100.2", "kind": "imaging", "priority": "routine", "clinical_question": "复查"},
        status=201)
    oid = other["id"]
    await api.ok("POST", f"/api/v1/reading-requests/{oid}/move", "coord-county",
                 {"centre": "city-imaging", "reason": "县中心积压"})
    await api.ok("POST", f"/api/v1/reading-requests/{oid}/move", "admin", {"centre": "county-imaging", "reason": "回"})
    await api.ok("POST", f"/api/v1/reading-requests/{oid}/assign", "coord-county", {"reader_id": "dr-wang",
                                                                                     "reason": "熟悉病例"})
    await api.ok("POST", f"/api/v1/reading-requests/{oid}/release", "dr-wang")
    await api.ok("POST", f"/api/v1/reading-requests/{oid}/claim", "dr-li")
    await api.ok("POST", f"/api/v1/reading-requests/{oid}/return", "dr-li", {"reason_code": "image_quality",
                                                                             "comment": "运动伪影"})
    # two-level sign-off: a resident submits, a reviewer edits, sends back, countersigns; the versions
    await template_store.load_shipped(api.rt.store, at="2030-01-01T00:00:00Z")
    junior = await api.create_request("1.2.826.0.1.100.2")
    jid = junior["id"]
    await api.ok("POST", f"/api/v1/reading-requests/{jid}/claim", "dr-zhou")
    await api.ok("PUT", f"/api/v1/reading-requests/{jid}/draft", "dr-zhou", {
        "findings": "两肺纹理清晰。", "impression": "心、肺、膈未见明显异常。", "template_id": "chest-dr-pa",
        "fields": {"ctr": 0.45, "lung_fields": "清晰"}})
    await call("PUT", f"/api/v1/reading-requests/{jid}/draft", "dr-zhou", {  # 422: outside the field's range
        "findings": "x", "impression": "y", "template_id": "chest-dr-pa", "fields": {"ctr": 3}})
    assert (await api.ok("POST", f"/api/v1/reading-requests/{jid}/sign", "dr-zhou", {}))["state"] == "submitted"
    await call("GET", f"/api/v1/reading-requests/{jid}", "cg-clinic")
    await call("POST", f"/api/v1/reading-requests/{jid}/countersign", "dr-zhou", {})  # 403: below sign_off
    await api.ok("PUT", f"/api/v1/reading-requests/{jid}/review", "dr-li", {"impression": "两肺未见异常。"})
    await api.ok("POST", f"/api/v1/reading-requests/{jid}/send-back", "dr-li", {"comment": "请描述心影"})
    await api.ok("POST", f"/api/v1/reading-requests/{jid}/sign", "dr-zhou", {"findings": "两肺纹理清晰，心影不大。"})
    countersigned = await api.ok("POST", f"/api/v1/reading-requests/{jid}/countersign", "dr-li")
    await call("GET", f"/api/v1/reading-requests/{jid}/versions", "dr-li")
    await call("GET", f"/api/v1/reading-requests/{jid}/versions", "cg-clinic")
    await call("GET", f"/api/v1/reports/{countersigned['report_id']}/versions", "cg-clinic")
    await call("GET", "/api/v1/reports/nope/versions", "cg-clinic")  # 404
    # report templates
    await call("GET", "/api/v1/report-templates?kind=imaging&modality=DX", "dr-zhou")
    await call("GET", "/api/v1/report-templates/chest-dr-pa", "dr-zhou")
    await call("GET", "/api/v1/report-templates/chest-dr-pa?version=1", "dr-zhou")
    await call("GET", "/api/v1/report-templates/nope", "dr-zhou")  # 404
    await call("GET", "/api/v1/report-templates/chest-dr-pa/versions", "admin")
    knee = {"id": "knee-dr", "name": "膝关节正侧位DR", "kind": "imaging", "modalities": ["DX"], "body_part": "KNEE",
            "sections": {"findings": {"title": "影像所见", "normal": "膝关节诸骨骨质未见异常。"},
                         "impression": {"title": "诊断意见", "normal": "膝关节未见明显异常。"}},
            "fields": [{"key": "effusion", "label": "关节积液", "type": "choice", "choices": ["无", "少量", "中量"]}]}
    await api.ok("POST", "/api/v1/report-templates", "dr-wang", knee, status=201)  # a lead: his centre's
    await call("POST", "/api/v1/report-templates", "dr-li", {**knee, "id": "knee-dr-2"})  # 403: not a lead
    await call("POST", "/api/v1/report-templates", "admin", knee)  # 409: exists
    await api.ok("PUT", "/api/v1/report-templates/knee-dr", "dr-wang",
                 {**{k: v for k, v in knee.items() if k != "id"}, "base_version": 1})
    await call("PUT", "/api/v1/report-templates/knee-dr", "dr-wang",  # 409: someone saved version 2
               {**{k: v for k, v in knee.items() if k != "id"}, "base_version": 1})

    waiting = await api.ok("POST", "/api/v1/reading-requests", "cg-clinic", {
        "study_uid": "1.2.826.0.1.100.99", "kind": "imaging", "priority": "routine", "clinical_question": "?"},
        status=201)
    await api.ok("POST", f"/api/v1/reading-requests/{waiting['id']}/cancel", "cg-clinic", {"reason": "重复"})
    third = await api.create_request("1.2.826.0.1.100.2", kind="ecg")
    await api.ok("POST", f"/api/v1/reading-requests/{third['id']}/claim", "dr-zhao")
    await call("POST", f"/api/v1/reading-requests/{third['id']}/escalate", "dr-zhao", {"reason": "疑难"})

    # the result of the signed report, as the delivery service records it
    for logged in await api.rt.store.read_log(0, limit=100_000, types=["report.signed"]):
        await on_report_signed(api.rt, logged.event)
    results = (await api.ok("GET", "/api/v1/results", "cg-clinic"))["items"]
    result_id = results[0]["id"]
    await call("GET", f"/api/v1/results/{result_id}", "cg-clinic")
    await call("GET", "/api/v1/results/nope", "cg-clinic")
    await call("GET", f"/api/v1/results/{result_id}/pdf", "cg-clinic")
    await call("GET", "/api/v1/gateway/refusals", "cg-clinic")  # 404: no DICOM delivery made it yet
    await api.ok("POST", f"/api/v1/results/{result_id}/acknowledge", "cg-clinic", {"note": "已通知患者"})
    await call("POST", f"/api/v1/results/{result_id}/acknowledge", "cg-clinic", {})  # 409: already
    # a delivery given up on, then redriven
    (dicom,) = await api.rt.store.find(DELIVERIES, {"result_id": result_id, "channel": "dicom"})
    async with api.rt.store.transaction() as tx:
        await tx.update(DELIVERIES, dicom["id"], {"state": "dead", "dead_at": "2030-01-01T00:00:00.000Z",
                                                  "last_error": "association rejected"})
    await call("GET", "/api/v1/deliveries/dead-letters", "coord-county")
    await call("POST", f"/api/v1/deliveries/{dicom['id']}/redrive", "coord-county", {})
    await call("POST", "/api/v1/deliveries/nope/redrive", "coord-county", {})

    # a consultation: request, triage, schedule, reschedule, start, notes, opinion
    cons = await api.ok("POST", "/api/v1/consultations", "cg-clinic", {
        "chief_complaint": "胸闷", "question": "是否需要上转?", "urgency": "urgent", "study_uids": [CG_CT],
        "preferred_windows": [{"start": "2030-01-02T09:00:00Z", "end": "2030-01-02T10:00:00Z"}]}, status=201)
    cid = cons["id"]
    await call("GET", "/api/v1/consultations", "cg-clinic")
    await call("GET", f"/api/v1/consultations/{cid}", "cg-clinic")
    await api.ok("POST", f"/api/v1/consultations/{cid}/triage", "coord-county", {"note": "接收"})
    await api.ok("POST", f"/api/v1/consultations/{cid}/schedule", "coord-county",
                 {"start": "2030-01-02T09:00:00Z", "end": "2030-01-02T10:00:00Z", "specialists": ["dr-wang"]})
    await api.ok("POST", f"/api/v1/consultations/{cid}/reschedule", "coord-county",
                 {"start": "2030-01-02T10:00:00Z", "end": "2030-01-02T11:00:00Z", "reason": "门诊冲突"})
    await call("GET", f"/api/v1/consultations/{cid}/case", "dr-wang")
    clock.now = parse_iso("2030-01-02T09:55:00Z")
    await api.ok("POST", f"/api/v1/consultations/{cid}/start", "dr-wang")
    await api.ok("POST", f"/api/v1/consultations/{cid}/notes", "dr-wang", {"text": "胸片未见异常"}, status=201)
    await call("GET", f"/api/v1/consultations/{cid}/notes", "cg-clinic")
    await api.ok("POST", f"/api/v1/consultations/{cid}/opinion", "dr-wang", {
        "assessment": "稳定", "recommendations": {"disposition": "manage_locally", "plan": "继续观察"}})
    await call("POST", f"/api/v1/consultations/{cid}/cancel", "coord-county", {"reason": "x"})  # 409
    for action, body in (("withdraw", {"reason": "好转"}), ("cancel", {"reason": "专家不在"})):
        again = await api.ok("POST", "/api/v1/consultations", "cg-clinic", {
            "chief_complaint": "咳嗽", "question": "?", "urgency": "routine", "study_uids": [CG_CT]}, status=201)
        user = "cg-clinic" if action == "withdraw" else "coord-county"
        await api.ok("POST", f"/api/v1/consultations/{again['id']}/{action}", user, body)

    # two-way referral (双向转诊, docs/referral.md): slots, up-referral, book, accept, arrival, down-referral
    slots = await api.ok("POST", "/api/v1/referral-slots", "county-cardio", {"department": "心内科", "slots": [
        {"start": "2030-01-05T09:00:00+08:00", "end": "2030-01-05T09:30:00+08:00"}]}, status=201)
    await call("POST", "/api/v1/referral-slots", "county-cardio", {"department": "心内科"})  # 422
    await call("GET", "/api/v1/referral-slots?organization=county-hospital&date=2030-01-05", "cg-clinic")
    ref = await api.ok("POST", "/api/v1/referrals", "cg-clinic", {
        "target_organization": "county-hospital", "department": "心内科", "reason": "胸痛待查", "urgency": "urgent",
        "study_uids": [CG_CT], "family_doctor": "刘医生"}, status=201)
    fid = ref["id"]
    await call("GET", "/api/v1/referrals?direction=up", "county-cardio")
    await call("GET", f"/api/v1/referrals/{fid}", "county-cardio")
    await call("GET", f"/api/v1/referrals/{fid}/case", "county-cardio")
    await call("GET", "/api/v1/referrals/nope", "county-cardio")  # 404
    await api.ok("POST", f"/api/v1/referrals/{fid}/book", "county-cardio", {"slot_id": slots["items"][0]["id"]})
    await api.ok("POST", f"/api/v1/referrals/{fid}/accept", "county-cardio", {"note": "请带既往资料"})
    await api.ok("POST", f"/api/v1/referrals/{fid}/arrive", "county-cardio", {})
    await api.ok("POST", f"/api/v1/referrals/{fid}/complete", "county-cardio", {"summary": "PCI"})
    down = await api.ok("POST", f"/api/v1/referrals/{fid}/refer-down", "county-cardio", {
        "diagnosis": "冠心病", "treatment_summary": "PCI 术后", "plan": {
            "medicines": [{"name": "阿司匹林", "dose": "100mg", "frequency": "qd"}],
            "follow_ups": [{"date": "2030-01-20", "what": "复查"}]}}, status=201)
    await api.ok("POST", f"/api/v1/referrals/{down['id']}/accept", "cg-clinic", {})
    await api.ok("POST", f"/api/v1/referrals/{down['id']}/follow-up", "cg-clinic", {"date": "2030-01-20"})
    await call("GET", f"/api/v1/referrals/{fid}/trace", "coord-county")
    await call("GET", f"/api/v1/referrals/{fid}/letter.pdf", "cg-clinic")
    await call("GET", "/api/v1/monitor/referrals?month=2030-01", "admin")
    await call("GET", "/api/v1/recognition/items", "cg-clinic")
    await call("POST", "/api/v1/recognition/check", "cg-clinic", {"patient_id": "CG001", "modality": "CT"})
    await call("POST", "/api/v1/recognition/decisions", "cg-clinic", {  # 404: nothing still valid
        "patient_id": "CG001", "modality": "CT", "body_part": "CHEST", "prior_study_uid": CG_CT})
    await call("GET", "/api/v1/monitor/referrals", "coord-county")
    for action in ("refuse", "cancel"):
        other = await api.ok("POST", "/api/v1/referrals", "cg-clinic", {
            "target_organization": "county-hospital", "department": "心内科", "reason": "头晕",
            "patient_name": "王^五"}, status=201)
        await api.ok("POST", f"/api/v1/referrals/{other['id']}/{action}",
                     "county-cardio" if action == "refuse" else "cg-clinic", {"reason": "床位已满"})

    # the monitor, once it has read the events
    for logged in await api.rt.store.read_log(0, limit=100_000):
        if logged.event.type in monitor.types:
            await monitor.on_event(logged.event)
    for path in ("/api/v1/monitor/centres", "/api/v1/monitor/centres/county-imaging", "/api/v1/monitor/sites",
                 "/api/v1/monitor/consortium", "/api/v1/monitor/metrics"):
        await call("GET", path, "admin")
    await call("GET", "/api/v1/monitor/centres/nope", "coord-county")  # 404
    # the consortium's figures and settlement (docs/figures.md, docs/settlement.md)
    await call("GET", "/figures")
    for path in ("/api/v1/figures?period=2030-01", "/api/v1/figures/trend?year=2030",
                 "/api/v1/figures/export?period=2030-01&format=csv&section=turnaround",
                 "/api/v1/figures/export?period=2030&format=xlsx", "/api/v1/settlement/statements?month=2030-01",
                 "/api/v1/settlement/reconciliation?month=2030-01", "/api/v1/settlement/export?month=2030-01"):
        await call("GET", path, "admin")
    await call("GET", "/api/v1/figures?period=2030-13", "admin")  # 400
    entries = (await api.ok("GET", "/api/v1/settlement/ledger?month=2030-01", "admin"))["entries"]
    await call("POST", f"/api/v1/settlement/entries/{entries[0]['id']}/void", "admin", {"reason": "重复收费"})
    await call("POST", "/api/v1/settlement/entries/nope/void", "admin", {"reason": "x"})  # 404
    await call("POST", "/api/v1/settlement/months/2026-01/close", "admin")
    await call("POST", "/api/v1/settlement/months/2099-01/close", "admin")  # 409: not ended
    # Exam requests (申请管理, docs/orders.md)
    order = await api.ok("POST", "/api/v1/orders", "cg-clinic", {
        "patient_id": "CG900", "patient_name": "Zhang^San=张^三", "kind": "imaging", "modality": "CT",
        "clinical_question": "咳嗽两周", "requesting_physician": "李^医生", "station_ae": "CG_CT1",
        "scheduled_at": "2026-12-03T09:30:00+08:00"}, status=201)
    await call("GET", "/api/v1/orders?overdue=true", "cg-clinic")
    await call("GET", f"/api/v1/orders/{order['id']}", "cg-clinic")
    await call("POST", f"/api/v1/orders/{order['id']}/change", "cg-clinic", {"changes": {"priority": "stat"}})
    await call("POST", f"/api/v1/orders/{order['id']}/cancel", "cg-clinic", {"reason": "患者未到"})
    await call("POST", f"/api/v1/orders/{order['id']}/cancel", "cg-clinic", {"reason": "again"})  # 409
    await call("POST", "/api/v1/orders", "cg-clinic", {"patient_id": "x"})  # 422
    await call("GET", "/api/v1/consortium", "admin")
    await call("GET", "/api/v1/audit?limit=20", "auditor")
    await call("GET", "/api/v1/audit/verification", "auditor")

    # records custody: deletion under retention (409 here), sealing (封存)
    await call("DELETE", f"/api/v1/studies/{CG_CT}", "admin")
    await call("DELETE", f"/api/v1/reports/{report_id}", "admin")
    await file_instances(api, CG_CT)
    await file_instances(api, "1.2.826.0.1.100.2")
    seal = await api.ok("POST", "/api/v1/seals", "auditor",
                        {"organization": "chengguan-thc", "patient_id": "CG001", "reason": "封存"}, status=201)
    await call("POST", "/api/v1/seals", "auditor", {"organization": "chengguan-thc"})  # 422
    await call("GET", "/api/v1/seals?state=sealed", "auditor")
    await call("GET", f"/api/v1/seals/{seal['id']}", "auditor")
    await call("GET", f"/api/v1/seals/{seal['id']}/verification", "auditor")
    await call("POST", f"/api/v1/seals/{seal['id']}/unseal", "admin", {"reason": "解封"})
    await call("POST", f"/api/v1/seals/{seal['id']}/unseal", "admin", {"reason": "解封"})  # 409
    # township edges (前置机)
    await call("POST", "/api/v1/edge/heartbeat", "cg-edge", {"backlog_studies": 2, "backlog_instances": 40,
                                                             "bytes_pending": 1000, "last_success_at": None})
    await call("POST", "/api/v1/edge/heartbeat", "cg-edge", {"backlog_studies": -1})  # 422
    await call("POST", f"/api/v1/edge/studies/{CG_CT}/complete", "cg-edge", {"instances": 1})
    await call("POST", f"/api/v1/edge/studies/{CG_CT}/complete", "cg-edge", {"instances": 10**6})  # 409
    await call("POST", "/api/v1/edge/studies/1.2.3.999/complete", "cg-edge", {"instances": 1})  # 404
    await call("GET", "/api/v1/edges", "coord-county")
    # results back through the edge: chengguan-thc's terminal behind its edge, its PDF signed
    result = await api.rt.store.get("results", result_id)
    async with api.rt.store.transaction() as tx:
        await tx.insert(DELIVERIES, new_delivery(result, "edge", {"ae_title": "CG_TERM", "host": "192.168.1.20",
                                                                  "port": 104, "tls": False}, at=result["created_at"]))
        await tx.insert("signed_pdfs", {"id": result_id, "pdf": base64.b64encode(b"%PDF-1.7\n%%EOF\n").decode(),
                                        "sha256": "0" * 64})
    await call("GET", f"/api/v1/results/{result_id}/objects", "cg-edge")
    await call("GET", "/api/v1/results/nope/objects", "cg-edge")  # 404
    stored = {"terminal": "CG_TERM@192.168.1.20:104",
              "sop_instance_uids": [result["sr_sop_instance_uid"], result["pdf_sop_instance_uid"]]}
    await call("POST", f"/api/v1/edge/results/{result_id}/delivered", "cg-edge", {**stored, "sop_instance_uids": []})
    await call("POST", f"/api/v1/edge/results/{result_id}/delivered", "cg-edge", stored)
    await call("POST", f"/api/v1/edge/results/{result_id}/delivered", "cg-edge", stored)  # again: the same
    await call("GET", f"/api/v1/results/{result_id}/objects", "cg-edge")  # 409: at the terminal already
    await call("GET", "/api/v1/edge/worklist", "cg-edge")
    await call("GET", "/api/v1/edge/worklist?since=2026-01-01T00:00:00.000Z&limit=10", "cg-edge")
    await call("GET", "/api/v1/edge/worklist?since=yesterday", "cg-edge")  # 422
    step = {"sop_instance_uid": "1.2.826.0.1.77.1", "status": "COMPLETED", "calling_ae": "CG_CT1", "modality": "CT",
            "accession_numbers": ["NOSUCHACC"], "scheduled_step_ids": [], "requested_procedure_ids": [], "study_uids": []}
    await call("POST", "/api/v1/edge/procedure-steps", "cg-edge", step)
    await call("POST", "/api/v1/edge/procedure-steps", "cg-edge", step)  # unchanged: a resend
    await call("POST", "/api/v1/edge/procedure-steps", "cg-edge", {**step, "status": "IN PROGRESS"})  # 409
    await call("POST", "/api/v1/edge/procedure-steps", "cg-edge", {**step, "calling_ae": "DB_DR1"})  # 422
    # the OHIF Viewer's files and generated config (docs/desks.md)
    await call("GET", "/viewer", "dr-wang")
    await call("GET", "/viewer/app-config.js", "dr-wang")
    await call("POST", "/api/v1/auth/revoke", "dr-li", {})
    # the desks (docs/desks.md): sign in, the session, pages, sign out
    await set_password(api.rt, "dr-wang")
    await call("POST", "/api/v1/session", body={"user": "dr-wang", "password": "not-his-password"})  # 401
    _, session, headers = await call("POST", "/api/v1/session", body={"user": "dr-wang", "password": PASSWORD})
    cookie = {"Cookie": headers["Set-Cookie"].split(";")[0]}
    await call("GET", "/api/v1/session", headers=cookie)
    await call("GET", "/signin")
    await call("GET", "/desk", headers=cookie)  # 303 to /desk/reader
    await call("GET", "/desk/clinic", headers=cookie)  # a reader: 303 to /desk
    await call("GET", "/desk/reader", headers=cookie)
    await call("GET", "/desk/admin", headers=cookie)  # 403: not an admin
    await call("GET", "/desk/admin", "admin")
    await call("GET", "/desk/static/desk.js")
    await call("GET", "/desk/static/nope.js")  # 404
    await call("DELETE", "/api/v1/session", headers=cookie)  # 403: no X-CSRF-Token
    await call("DELETE", "/api/v1/session", headers={**cookie, "X-CSRF-Token": session["csrf_token"]})
    await call("GET", "/api/v1/session", headers=cookie)  # 401
    # users and passwords
    await call("GET", "/api/v1/users?role=reader", "admin")
    await call("POST", "/api/v1/users", "admin", {"id": "dr-ma", "name": "马丽", "role": "reader",
                                                  "organization": "county-hospital", "centre": "county-imaging",
                                                  "title": "主治医师", "password": "马丽的初始密码-2026"})
    await call("POST", "/api/v1/users", "admin", {"id": "dr-ma", "name": "x", "role": "clinic",
                                                  "organization": "county-hospital"})  # 409
    await call("POST", "/api/v1/users", "admin", {"id": "dr-ma2", "name": "x", "role": "reader",
                                                  "organization": "county-hospital"})  # 422: no centre
    await call("PATCH", "/api/v1/users/dr-ma", "admin", {"disabled": True})
    await call("PATCH", "/api/v1/users/nobody", "admin", {"disabled": True})  # 404
    await call("PUT", "/api/v1/users/dr-ma/password", "admin", {"password": "马丽的新密码-2026-12"})
    await call("PUT", "/api/v1/users/dr-ma/password", "cg-clinic", {"password": "马丽的新密码-2026-12"})  # 403

    # duty rosters (排班管理, docs/quality.md#duty-rosters)
    roster = "/api/v1/centres/county-imaging/roster"
    day = {"start": "2030-01-02T00:00:00+08:00", "end": "2030-01-03T00:00:00+08:00"}
    await api.ok("PUT", roster, "coord-county", {**day, "shifts": [
        {"reader": r, "kind": "day", "start": "2030-01-02T08:00:00+08:00", "end": "2030-01-02T20:00:00+08:00"}
        for r in ("dr-wang", "dr-li")]})
    await call("PUT", roster, "coord-county", {**day, "shifts": [  # 422: below min_on_duty
        {"reader": "dr-li", "kind": "day", "start": "2030-01-02T08:00:00+08:00", "end": "2030-01-02T20:00:00+08:00"}]})
    await call("PUT", roster, "coord-city", {**day, "shifts": []})  # 404
    await call("GET", roster, "dr-wang")
    await call("GET", f"{roster}?from=yesterday", "dr-wang")  # 422
    await call("GET", "/api/v1/on-duty", "admin")
    await call("GET", "/api/v1/on-duty?centre=city-imaging", "coord-county")  # 404

    answered = {(m, t) for m, t, _ in contract.checked}
    documented = {(m.upper(), p) for p, item in contract.doc["paths"].items() for m in item if m in METHODS}
    not_called = {(m, p) for m, p in documented - answered if not p.startswith("/dicomweb")
                  and "stream" not in p and "/ecg" not in p}  # DICOMweb, streams, ECG: below, and elsewhere
    assert not_called == set(), f"the flow misses {sorted(not_called)}"


async def test_dicomweb_answers_as_documented(api, contract, tmp_path):  # noqa: F811
    path = sample_files(tmp_path / "samples")["ct"]
    data = path.read_bytes()

    async def call(method: str, url: str, user: str = "cg-clinic", **kw: Any) -> Any:
        return await api.call(method, url, user=user, **kw)

    status, body, _ = await call("POST", "/dicomweb/studies", data=multipart([data]),
                                 headers={"Content-Type": STOW_TYPE})
    assert status == 200, body
    from pydicom import dcmread
    ds = dcmread(path)
    study, series, instance = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    await call("POST", "/dicomweb/studies", data=multipart([b"not dicom"]), headers={"Content-Type": STOW_TYPE})
    await call("POST", f"/dicomweb/studies/{study}", data=b"x", headers={"Content-Type": "application/dicom"})
    base = f"/dicomweb/studies/{study}"
    for url in ("/dicomweb/studies", "/dicomweb/series", "/dicomweb/instances", f"{base}/series",
                f"{base}/instances", f"{base}/series/{series}/instances", f"{base}/metadata",
                f"{base}/series/{series}/metadata", f"{base}/series/{series}/instances/{instance}/metadata",
                "/dicomweb/studies?PatientName=nobody", "/dicomweb/studies?BadKey=1"):
        await call("GET", url)
    for url in (base, f"{base}/series/{series}", f"{base}/series/{series}/instances/{instance}",
                f"{base}/series/{series}/instances/{instance}/frames/1",
                f"{base}/series/{series}/instances/{instance}/bulkdata/7FE00010",
                f"{base}/series/{series}/instances/{instance}/rendered",
                f"{base}/series/{series}/instances/{instance}/frames/1/rendered"):
        await call("GET", url, headers={"Accept": "*/*"})
    await call("GET", f"{base}/series/{series}/instances/1.2.3/metadata")  # 404
    dicomweb = {(m, t) for m, t, _ in contract.checked if t.startswith("/dicomweb")}
    documented = {(m.upper(), p) for p, item in contract.doc["paths"].items() for m in item
                  if m in METHODS and p.startswith("/dicomweb")}
    assert documented - dicomweb == set()
