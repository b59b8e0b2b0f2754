"""Request bodies checked against schemas/openapi.yaml; errors as precise problem+json."""

from __future__ import annotations

from services.api.validation import MAX_JSON_BYTES, spec

CG_CT = "1.2.826.0.1.100.1"
CREATE = "/api/v1/reading-requests"


def good(**kw):
    return {"study_uid": CG_CT, "kind": "imaging", "priority": "routine", "clinical_question": "?", **kw}


async def count_requests(api) -> int:
    return await api.rt.store.count("reading_requests")


async def test_malformed_json_is_400(api):
    status, problem, headers = await api.call("POST", CREATE, user="cg-clinic", data=b'{"study_uid": ',
                                              headers={"Content-Type": "application/json"})
    assert status == 400 and headers["Content-Type"].startswith("application/problem+json")
    assert problem["detail"].startswith("malformed JSON") and problem["instance"] == CREATE
    assert await count_requests(api) == 0


async def test_unknown_field_is_422_naming_it(api):
    status, problem, _ = await api.call("POST", CREATE, user="cg-clinic", json=good(urgentish=True))
    assert status == 422
    assert problem["errors"] == [{"field": "(body)", "message": "unknown field(s) 'urgentish' are not allowed"}]
    assert "urgentish" in problem["detail"]
    assert await count_requests(api) == 0


async def test_each_violation_names_the_field_and_why(api):
    body = good(priority="asap", signed_resident="yes")
    del body["clinical_question"]
    status, problem, _ = await api.call("POST", CREATE, user="cg-clinic", json=body)
    assert status == 422
    fields = {e["field"]: e["message"] for e in problem["errors"]}
    assert fields["/priority"] == "'asap' is not one of ['stat', 'urgent', 'routine']"
    assert fields["/signed_resident"] == "'yes' is not of type 'boolean'"
    assert fields["(body)"] == "'clinical_question' is required"
    status, problem, _ = await api.call("POST", CREATE, user="cg-clinic", json=good(study_uid="1.2.abc"))
    assert status == 422 and problem["errors"][0]["field"] == "/study_uid"
    status, problem, _ = await api.call("POST", CREATE, user="cg-clinic", json=["not", "an", "object"])
    assert status == 422 and "is not of type 'object'" in problem["detail"]
    assert await count_requests(api) == 0


async def test_oversized_body_is_413(api):
    status, problem, _ = await api.call("POST", CREATE, user="cg-clinic",
                                        json=good(clinical_question="肺" * MAX_JSON_BYTES))
    assert status == 413 and problem["status"] == 413
    assert await count_requests(api) == 0


async def test_chunked_bodies_are_read_whole_and_limited(api):
    import json

    async def chunks(payload: bytes, size: int = 1000):
        for i in range(0, len(payload), size):
            yield payload[i:i + size]

    findings = "右下肺斑片影。" * 2000  # ~40 KB, many chunks
    created = await api.create_request(CG_CT)
    await api.ok("POST", f"/api/v1/reading-requests/{created['id']}/claim", "dr-wang")
    body = json.dumps({"findings": findings, "impression": "肺炎"}, ensure_ascii=False).encode()
    status, saved, _ = await api.call("PUT", f"/api/v1/reading-requests/{created['id']}/draft", user="dr-wang",
                                      data=chunks(body), headers={"Content-Type": "application/json"})
    assert status == 200 and saved["draft"]["findings"] == findings
    huge = json.dumps({"findings": "x" * (MAX_JSON_BYTES + 10), "impression": "y"}).encode()
    status, problem, _ = await api.call("PUT", f"/api/v1/reading-requests/{created['id']}/draft", user="dr-wang",
                                        data=chunks(huge, 64 * 1024), headers={"Content-Type": "application/json"})
    assert status == 413 and problem["status"] == 413


async def test_missing_required_body_and_wrong_content_type(api):
    status, problem, _ = await api.call("POST", CREATE, user="cg-clinic")
    assert status == 400 and "required" in problem["detail"]
    status, problem, _ = await api.call("POST", CREATE, user="cg-clinic", data=b"study_uid=1",
                                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415


async def test_query_parameters_are_checked(api):
    status, problem, _ = await api.call("GET", "/api/v1/worklist?priority=asap", user="dr-wang")
    assert status == 422 and "priority" in problem["detail"]
    status, problem, _ = await api.call("GET", "/api/v1/worklist?limit=0", user="dr-wang")
    assert status == 422 and "limit" in problem["detail"]
    status, problem, _ = await api.call("GET", "/api/v1/worklist?center=city-imaging", user="dr-wang")
    assert status == 422 and "'center'" in problem["detail"]
    # ``centre`` narrows a reader's worklist to one of his centres; another centre is refused
    status, problem, _ = await api.call("GET", "/api/v1/worklist?centre=city-imaging", user="dr-wang")
    assert status == 403 and "city-imaging" in problem["detail"]
    status, problem, _ = await api.call("GET", "/api/v1/audit?from=yesterday", user="auditor")
    assert status == 422 and "ISO 8601" in problem["detail"]


async def test_unknown_route_and_method_are_problems(api):
    status, problem, _ = await api.call("GET", "/api/v1/nothing-here", user="admin")
    assert status == 404 and problem["type"].endswith("not-found")
    status, problem, headers = await api.call("DELETE", "/api/v1/audit", user="admin")
    assert status == 405 and "GET" in headers["Allow"]


async def test_workflow_errors_map_to_http(api):
    created = await api.create_request(CG_CT)
    # a second open imaging request for the same study: Conflict -> 409
    status, problem, _ = await api.call("POST", CREATE, user="cg-clinic", json=good())
    assert status == 409 and problem["type"].endswith("conflict")
    # sign before claim: IllegalTransition -> 409
    status, problem, _ = await api.call("POST", f"{CREATE}/{created['id']}/sign", user="dr-wang", json={})
    assert status == 409 and "queued" in problem["detail"]
    # signing an empty report: Invalid -> 422
    await api.ok("POST", f"{CREATE}/{created['id']}/claim", "dr-wang")
    status, problem, _ = await api.call("POST", f"{CREATE}/{created['id']}/sign", user="dr-wang", json={})
    assert status == 422 and "findings" in problem["detail"]


async def test_openapi_document_is_served_and_matches_the_routes(api):
    status, doc, _ = await api.call("GET", "/api/v1/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1") and doc == spec()
    declared = {(m.upper(), p) for p, item in doc["paths"].items() for m in item
                if m in ("get", "put", "post", "patch", "delete")}
    routes = {(r.method, r.resource.canonical) for r in api.service._runner.app.router.routes() if r.method != "HEAD"}
    assert declared == routes  # (also tests/api/test_openapi_contract.py)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if "application/json" in op.get("requestBody", {}).get("content", {}):
                ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
                assert schema.get("additionalProperties") is False, (method, path)


async def test_responses_match_their_declared_schemas(api):
    """The documented response shapes are what the API returns (lists, problems)."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012
    doc = spec()
    registry = Registry().with_resource("urn:t", Resource.from_contents(doc, default_specification=DRAFT202012))

    def validate(name, instance):
        Draft202012Validator({"$ref": f"urn:t#/components/schemas/{name}"}, registry=registry).validate(instance)

    await api.create_request(CG_CT)
    validate("StudyPage", await api.ok("GET", "/api/v1/studies", "cg-clinic"))
    validate("RequestPage", await api.ok("GET", "/api/v1/worklist", "dr-wang"))
    validate("RequestPage", await api.ok("GET", "/api/v1/reading-requests", "cg-clinic"))
    validate("StudyDetail", await api.ok("GET", f"/api/v1/studies/{CG_CT}", "dr-wang"))
    validate("AuditPage", await api.ok("GET", "/api/v1/audit", "auditor"))
    validate("Me", await api.ok("GET", "/api/v1/me", "auditor"))
    _, problem, _ = await api.call("GET", "/api/v1/worklist", user="cg-clinic")
    validate("Problem", problem)


def test_every_operation_documents_the_errors_it_can_answer():
    doc = spec()
    public = {"/", "/healthz", "/readyz", "/api/v1/openapi.json", "/metrics", "/dashboard"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            codes = set(op["responses"])
            if path == "/desk" or path.startswith("/desk/"):  # a page: a stranger is sent to /signin
                assert op.get("security") == [] or "303" in codes, (method, path)
            elif path not in public and op.get("security") != []:
                assert "401" in codes, (method, path)
            if "{" in path:
                assert "404" in codes, (method, path)
            if "application/json" in op.get("requestBody", {}).get("content", {}):
                assert {"400", "413", "422"} <= codes, (method, path)
