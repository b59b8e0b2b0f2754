"""The desks' security over real HTTP(S) on loopback: no page, API or DICOMweb call without a
session or token (every route of the application, found from its router); no state-changing call
with the cookie but without the CSRF header (every such route: 403, nothing changed); the cookie's
flags, with Secure over TLS (Yilian's own, or a trusted proxy's)."""

from __future__ import annotations

import re
import ssl
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from services.api.auth import PUBLIC_PATHS, PUBLIC_PREFIXES, SESSION_PATH, is_page
from services.core.store.schema import COLLECTIONS

from .conftest import start_desk, stop_desk
from .support import PASSWORD, session_cookie, set_password

STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")


def operations(desk) -> list[tuple[str, str]]:
    """Every (method, path) the application serves but the public ones, with a value in each path parameter."""
    found = set()
    for route in desk.service._runner.app.router.routes():
        canonical = route.resource.canonical
        if route.method in ("HEAD", "OPTIONS", "*") or canonical in PUBLIC_PATHS or canonical.startswith(PUBLIC_PREFIXES):
            continue
        if (route.method, canonical) == ("POST", SESSION_PATH):
            continue
        found.add((route.method, re.sub(r"\{[^}]+\}", "1.2.826.0.1.100.1", canonical)))
    # a viewer's assets (served by the reader's desk) and a page that does not exist are pages too
    found |= {("GET", "/viewer/index.html"), ("GET", "/desk/nowhere")}
    return sorted(found)


async def snapshot(desk) -> dict:
    out = {name: sorted(await desk.rt.store.find(name), key=lambda d: d["id"]) for name in COLLECTIONS}
    out["log"] = await desk.rt.store.last_seq()
    return out


@pytest.mark.timeout(120)
async def test_nothing_but_public_paths_answers_without_a_session_or_token(desk):
    ops = operations(desk)
    assert len(ops) > 80 and any(p.startswith("/dicomweb") for _, p in ops) and ("GET", "/desk/admin") in ops
    ended = await session_cookie(desk.base, "admin")
    assert (await desk.call("DELETE", "/api/v1/session", headers=ended.headers()))[0] == 204
    before = await snapshot(desk)
    for credential, headers in (("none", {}), ("signed out", ended.headers()),
                                ("forged", {"Cookie": "yilian_session=" + "A" * 43, "X-CSRF-Token": "x"})):
        for method, path in ops:
            status, _, resp = await desk.call(method, path, headers=headers)
            if is_page(path) and method == "GET":
                assert status == 303, (credential, method, path, status)
                location = urlsplit(resp["Location"])
                assert location.path == "/signin", (credential, path, resp["Location"])
            else:
                assert status == 401, (credential, method, path, status)
    assert await snapshot(desk) == before


@pytest.mark.timeout(120)
async def test_a_cookie_without_the_csrf_header_changes_nothing_anywhere(desk):
    admin = await session_cookie(desk.base, "admin")
    ops = [(m, p) for m, p in operations(desk) if m in STATE_CHANGING]
    assert ("POST", "/dicomweb/studies") in ops and ("DELETE", SESSION_PATH) in ops and len(ops) > 30
    before = await snapshot(desk)
    for headers in (admin.headers(csrf=False), {**admin.headers(csrf=False), "X-CSRF-Token": "not-the-token"}):
        for method, path in ops:
            status, problem, _ = await desk.call(method, path, headers=headers, json={})
            assert status == 403 and "X-CSRF-Token" in problem["detail"], (method, path, status, problem)
    # a cross-site form post: the browser sends the cookie, never the header
    async with desk.http.post(desk.base + "/api/v1/users", data="id=mallory&role=admin", headers={
            **admin.headers(csrf=False), "Content-Type": "application/x-www-form-urlencoded"}) as resp:
        assert resp.status == 403
    assert await snapshot(desk) == before
    # with the header the same session works
    status, _, _ = await desk.call("PATCH", "/api/v1/users/dr-li", headers=admin.headers(), json={"title": "主任医师"})
    assert status == 200


def certificate(directory: Path) -> tuple[Path, Path]:
    key, cert = directory / "api.key", directory / "api.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=yilian", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return key, cert


async def test_the_cookie_is_secure_over_tls(tmp_path):
    key, cert = certificate(tmp_path)
    desk = await start_desk(tmp_path / "data", http_tls_cert=str(cert), http_tls_key=str(key))
    try:
        await set_password(desk.rt, "dr-wang")
        context = ssl.create_default_context(cafile=str(cert))
        base = f"https://127.0.0.1:{desk.service.port}"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            async with http.post(base + "/api/v1/session", json={"user": "dr-wang", "password": PASSWORD},
                                 ssl=context) as resp:
                assert resp.status == 200
                flags = [f.strip().lower() for f in resp.headers["Set-Cookie"].split(";")]
            assert {"secure", "httponly", "samesite=strict", "path=/"} <= set(flags)
            cookie = resp.cookies["yilian_session"].value
            async with http.get(base + "/api/v1/session", headers={"Cookie": f"yilian_session={cookie}"},
                                ssl=context) as resp:
                assert resp.status == 200
    finally:
        await stop_desk(desk)


async def test_the_cookie_is_secure_when_a_trusted_proxy_says_https(tmp_path, monkeypatch):
    monkeypatch.setenv("YILIAN_TRUSTED_PROXIES", "127.0.0.1")
    desk = await start_desk(tmp_path)
    try:
        await set_password(desk.rt, "dr-wang")
        for proto, secure in (("https", True), ("http", False)):
            async with desk.http.post(desk.base + "/api/v1/session", json={"user": "dr-wang", "password": PASSWORD},
                                      headers={"X-Forwarded-Proto": proto, "X-Forwarded-For": "10.1.2.3"}) as resp:
                flags = [f.strip().lower() for f in resp.headers["Set-Cookie"].split(";")]
                assert ("secure" in flags) is secure, proto
        records = await desk.rt.store.find("audit", {"action": "session.signin"})
        assert {r["remote"] for r in records} == {"10.1.2.3"}  # the client behind the proxy
    finally:
        await stop_desk(desk)


async def test_an_untrusted_peer_cannot_claim_https(desk):
    await set_password(desk.rt, "dr-li")
    async with desk.http.post(desk.base + "/api/v1/session", json={"user": "dr-li", "password": PASSWORD},
                              headers={"X-Forwarded-Proto": "https"}) as resp:
        assert "secure" not in [f.strip().lower() for f in resp.headers["Set-Cookie"].split(";")]
