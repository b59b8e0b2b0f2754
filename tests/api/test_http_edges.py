"""The HTTP edges, on a real api service on loopback: whatever cannot be parsed — a body nested
too deeply, a multipart body aiohttp cannot split, a request line aiohttp's own parser refuses —
is a problem+json 400 logged in one line (never a 500, a text/plain answer or a traceback),
and ``GET /`` sends a browser to the dashboard."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from tests.dicomweb.conftest import web  # noqa: F401 - the fixture: an api service with DICOMweb
from tests.dicomweb.helpers import BOUNDARY, STOW_TYPE

BODY = {"study_uid": "1.2.3", "kind": "imaging", "priority": "routine", "clinical_question": "q"}


def assert_problem(status: int, body: bytes, headers, expected: int, path: str | None) -> dict:
    assert status == expected, (status, body[:300])
    assert headers["Content-Type"].startswith("application/problem+json"), headers["Content-Type"]
    problem = json.loads(body)
    assert problem["status"] == expected and problem.get("instance") == path and problem["detail"]
    return problem


def no_tracebacks(caplog) -> None:
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], \
        [(r.name, r.getMessage()) for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def post_json(web, path: str, data: bytes, user: str = "cg-clinic"):
    headers = {"Authorization": f"Bearer {web.token(user)}", "Content-Type": "application/json"}
    async with web.session.post(web.base + path, data=data, headers=headers) as resp:
        return resp.status, await resp.read(), resp.headers


async def test_deeply_nested_json_is_400(web, caplog):  # noqa: F811
    caplog.set_level(logging.INFO)
    path = "/api/v1/reading-requests"
    for depth in (100_000, 5_000, 200):  # past Python's parser; past the validator's recursion; just deep
        nested = b"[" * depth + b"]" * depth
        for data in (nested, b'{"study_uid": ' + nested + b"}"):
            problem = assert_problem(*await post_json(web, path, data), 400, path)
            assert "nested deeper than" in problem["detail"]
    # a number Python refuses to convert (more than 4300 digits) is malformed too
    problem = assert_problem(*await post_json(web, path, b'{"study_uid": ' + b"1" * 5000 + b"}"), 400, path)
    assert "malformed JSON" in problem["detail"]
    # still usable: an ordinary body is validated as before
    status, body, _ = await post_json(web, path, json.dumps({**BODY, "kind": {"a": [[1]]}}).encode())
    assert status == 422, body
    assert await web.rt.store.count("reading_requests") == 0
    no_tracebacks(caplog)


MALFORMED = {
    "a part's headers without their blank line":
        b"--%b\r\nContent-Type: application/dicom\r\n" + b"x" * 100 + b"\r\n--%b--\r\n",
    "a header that is no header": b"--%b\r\nnot a header\r\n\r\nabc\r\n--%b--\r\n",
    "one huge line after the boundary": b"--%b\r\n" + b"H" * (3 * 1024 * 1024) + b"%b",
    "one huge header line": b"--%b\r\nContent-Type: " + b"a" * (3 * 1024 * 1024) + b"\r\n\r\nxx\r\n--%b--\r\n",
    "a body of one huge line": b"P" * (3 * 1024 * 1024) + b"%b%b",
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_multipart_is_400(web, caplog, case):  # noqa: F811
    caplog.set_level(logging.INFO)
    body = MALFORMED[case].replace(b"%b", BOUNDARY.encode())
    problem = assert_problem(*await web.post("/studies", body, STOW_TYPE, user="cg-clinic"), 400, "/dicomweb/studies")
    assert problem["detail"].startswith("malformed multipart body"), problem
    assert await web.rt.store.count("instances") == 0
    no_tracebacks(caplog)


async def raw_request(web, request_line: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", web.service.port)
    try:
        writer.write(request_line + b"\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n")
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=10)  # the server closes after an error
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


async def test_what_aiohttps_parser_refuses_is_a_problem_logged_in_one_line(web, caplog):  # noqa: F811
    caplog.set_level(logging.INFO)
    status, headers, body = await raw_request(web, "GET /dicomweb/studies?PatientName=张* HTTP/1.1".encode())
    problem = assert_problem(status, body, headers, 400, None)  # no request was parsed: no instance
    assert "Invalid char in url query" in problem["detail"] and "\n" not in problem["detail"]
    logged = [r for r in caplog.records if "unparsable" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING
    assert logged[0].reason == problem["detail"]
    no_tracebacks(caplog)
    # not HTTP at all (a TLS hello, a scanner): the same answer, logged at debug level only, as aiohttp does
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="yilian.api")
    status, headers, body = await raw_request(web, b"\x16\x03\x01 / HTTP/1.1")
    assert_problem(status, body, headers, 400, None)
    assert [r.levelno for r in caplog.records if "unparsable" in r.getMessage()] == [logging.DEBUG]
    # encoded, as the README says (curl -G --data-urlencode 'PatientName=张*'): accepted
    status, _, _ = await web.get("/studies", user="cg-clinic", params={"PatientName": "张*"})
    assert status in (200, 204)


async def test_front_door(web):  # noqa: F811
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
    async with web.session.get(web.base + "/", headers={"Accept": browser}, allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/desk"
    async with web.session.get(web.base + "/", headers={"Accept": browser}) as resp:
        assert resp.status == 200 and resp.content_type == "text/html"  # /desk sent a stranger to /signin
        assert resp.url.path == "/signin"
    for accept in ("application/json", "*/*", None):
        async with web.session.get(web.base + "/", headers={"Accept": accept} if accept else {}) as resp:
            assert resp.status == 200 and resp.content_type == "application/json", accept
            index = await resp.json()
            assert index["dashboard"] == "/dashboard" and index["openapi"] == "/api/v1/openapi.json"
