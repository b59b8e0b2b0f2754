"""The OHIF Viewer at /viewer/: the installer's checks (integrity before unpacking, no path out of
the package, the build rebased under /viewer/) and what the API serves there."""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from pathlib import Path

import pytest

from services.api.viewer import install
from services.api.viewer.routes import app_config

from ..api.conftest import api  # noqa: F401

INDEX = ('<html><head><script>window.PUBLIC_URL="/"</script><script src="/app-config.js"></script>'
         '<script rel="preload" as="script" type="module" src="/init-service-worker.js"></script>'
         '<link href="/app.bundle.css" rel="stylesheet"></head><body></body></html>')
BUNDLE = '(() => {\n__webpack_require__.p = "/";\n})();\n'


def tarball(files: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def fake_package() -> dict[str, str]:
    return {"package/package.json": "{}", "package/dist/index.html": INDEX, "package/dist/app.bundle.1.js": BUNDLE,
            "package/dist/app-config.js": "window.config = {dataSources: ['https://elsewhere']};",
            "package/dist/sw.js": "// caches", "package/dist/assets/x.png": "png",
            "package/dist/app.bundle.css": "@font-face{src:url(/a1.woff2)}"}


def pinned(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(install, "INTEGRITY", install.integrity_of(data))


def test_a_tarball_that_is_not_the_pinned_one_is_refused_and_nothing_is_unpacked(tmp_path, monkeypatch):
    good = tarball(fake_package())
    pinned(monkeypatch, good)
    evil = tarball({**fake_package(), "package/dist/app.bundle.1.js": "steal()"})
    (tmp_path / "evil.tgz").write_bytes(evil)
    target = tmp_path / "viewer"
    with pytest.raises(install.InstallError, match="integrity"):
        install.install(target, tarball=tmp_path / "evil.tgz", log=lambda *_: None)
    assert not target.exists() and list(tmp_path.iterdir()) == [tmp_path / "evil.tgz"]
    assert install.main(["--tarball", str(tmp_path / "evil.tgz"), "--dir", str(target)]) == 1


def test_the_build_is_rebased_under_viewer_and_its_own_config_and_service_worker_left_out(tmp_path, monkeypatch):
    data = tarball(fake_package())
    pinned(monkeypatch, data)
    (tmp_path / "app.tgz").write_bytes(data)
    target = tmp_path / "viewer"
    assert install.install(target, tarball=tmp_path / "app.tgz", log=lambda *_: None)
    index = (target / "index.html").read_text()
    assert 'window.PUBLIC_URL="/viewer/"' in index and 'src="/viewer/app-config.js"' in index
    assert 'href="/viewer/app.bundle.css"' in index and "service-worker" not in index
    assert '__webpack_require__.p = "/viewer/";' in (target / "app.bundle.1.js").read_text()
    assert not (target / "app-config.js").exists() and not (target / "sw.js").exists()
    assert (target / "assets" / "x.png").read_text() == "png"
    assert "url(/viewer/a1.woff2)" in (target / "app.bundle.css").read_text()
    assert json.loads((target / install.MARKER).read_text())["integrity"] == install.INTEGRITY
    assert not install.install(target, tarball=tmp_path / "app.tgz", log=lambda *_: None)  # already there


def test_a_member_leaving_the_package_is_refused(tmp_path, monkeypatch):
    data = tarball({**fake_package(), "package/dist/../../../escaped.js": "x"})
    pinned(monkeypatch, data)
    (tmp_path / "app.tgz").write_bytes(data)
    with pytest.raises(install.InstallError, match="leaves the package"):
        install.install(tmp_path / "viewer", tarball=tmp_path / "app.tgz", log=lambda *_: None)
    assert not (tmp_path / "viewer").exists() and not list(tmp_path.rglob("escaped.js"))


def test_the_generated_config_points_ohif_at_this_origins_dicomweb_with_no_token():
    text = app_config()
    assert 'window.location.origin + "/dicomweb"' in text and '"routerBasename": "/viewer"' in text
    assert "Bearer" not in text and "token" not in text.lower() and "http" not in text.replace("https://", "")


@pytest.fixture
async def viewer(api, tmp_path, monkeypatch):  # noqa: F811
    data = tarball(fake_package())
    pinned(monkeypatch, data)
    (tmp_path / "app.tgz").write_bytes(data)
    install.install(tmp_path / "viewer", tarball=tmp_path / "app.tgz", log=lambda *_: None)
    api.rt.settings = dataclasses.replace(api.rt.settings, viewer_dir=tmp_path / "viewer")
    return api


async def test_the_api_serves_the_viewer_its_config_and_its_routes(viewer):
    status, _, headers = await viewer.call("GET", "/viewer/", user="dr-wang")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    status, _, headers = await viewer.call("GET", "/viewer/app.bundle.1.js", user="dr-wang")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    async with viewer.session.get(viewer.base + "/viewer/app-config.js",
                                  headers={"Authorization": f"Bearer {viewer.token('cg-clinic')}"}) as resp:
        assert resp.status == 200 and "/dicomweb" in await resp.text()
    async with viewer.session.get(viewer.base + "/viewer/viewer?StudyInstanceUIDs=1.2.3",
                                  headers={"Authorization": f"Bearer {viewer.token('dr-wang')}"}) as resp:
        assert resp.status == 200 and 'window.PUBLIC_URL="/viewer/"' in await resp.text()  # the SPA's route
    for missing in ("/viewer/nothing.js", "/viewer/../../etc/passwd", "/viewer/%2e%2e/%2e%2e/jwt.secret",
                    "/viewer/" + install.MARKER):
        status, body, _ = await viewer.call("GET", missing, user="dr-wang")
        assert status == 404, (missing, status, body)


async def test_not_installed_is_a_clear_503(api, tmp_path):  # noqa: F811
    api.rt.settings = dataclasses.replace(api.rt.settings, viewer_dir=tmp_path / "nothing")
    status, body, _ = await api.call("GET", "/viewer/", user="dr-wang")
    assert status == 503 and "make viewer" in body["detail"]


async def test_the_viewer_needs_a_signed_in_user(viewer):
    for path in ("/viewer/", "/viewer/app.bundle.1.js", "/viewer/app-config.js"):
        async with viewer.session.get(viewer.base + path, allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/signin?next=" + path, (path, resp.status)
    status, _, _ = await viewer.call("GET", "/viewer/app.bundle.1.js", user="auditor")  # no DICOMweb role
    assert status == 403
