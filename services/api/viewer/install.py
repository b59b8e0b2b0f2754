"""Puts the prebuilt OHIF Viewer (npm ``@ohif/app``, pinned) where the API serves it at ``/viewer/``.

``python -m services.api.viewer [--tarball FILE] [--dir DIR]``: downloads the pinned
tarball from the npm registry (or takes a copied one, for a site that cannot reach it), checks
its ``integrity`` (the registry's sha512, pinned here) BEFORE reading a byte of it as a tar,
and unpacks its ``package/dist`` into the viewer directory (``YILIAN_VIEWER_DIR``, default
``var/viewer`` of the source tree).  Nothing of it goes into git.

The build was made for the site root: its webpack public path and ``index.html`` say ``/``.
Served under ``/viewer/`` they (and the style sheets' ``url(/...)``) are rewritten to ``/viewer/`` here (the only changes to OHIF's
files); the service worker is left out (it would cache images in the browser).
``app-config.js`` is not taken from the package: the API generates it (``routes.py``).
A file ``.yilian-viewer.json`` records version and integrity; an install with the same pin is
a no-op, so ``make run`` and ``make test`` can call this every time.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from ...core.settings import DEFAULT_VIEWER_DIR

PACKAGE = "@ohif/app"
VERSION = "3.13.2"
TARBALL_URL = "https://registry.npmjs.org/@ohif/app/-/app-3.13.2.tgz"
INTEGRITY = "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
MARKER = ".yilian-viewer.json"
MOUNT = "/viewer/"
PUBLIC_PATH = '__webpack_require__.p = "/";'  # webpack's runtime/public_path in every entry bundle
MAX_TARBALL = 512 * 1024**2
LAYOUT = 2  # what _rebase does to the files; a viewer installed by an older one is installed again


class InstallError(Exception):
    pass


def default_dir() -> Path:
    return Path(os.environ.get("YILIAN_VIEWER_DIR") or DEFAULT_VIEWER_DIR)


def integrity_of(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def verify(data: bytes, expected: str | None = None) -> None:
    expected = expected or INTEGRITY
    got = integrity_of(data)
    if got != expected:
        raise InstallError(f"{PACKAGE} {VERSION}: the tarball's integrity is {got}, the pinned one {expected}; "
                           "refusing to unpack it")


def download(url: str = TARBALL_URL, *, timeout: float = 120.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        data = answer.read(MAX_TARBALL + 1)
    if len(data) > MAX_TARBALL:
        raise InstallError(f"{url}: larger than {MAX_TARBALL} bytes")
    return data


def installed(target: Path) -> dict | None:
    try:
        return json.loads((target / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_current(target: Path) -> bool:
    mark = installed(target)
    return (bool(mark) and mark.get("integrity") == INTEGRITY and mark.get("layout") == LAYOUT
            and (target / "index.html").is_file())


def _rebase_index(html: str) -> str:
    html = html.replace('window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{MOUNT}"')
    html = html.replace('<script rel="preload" as="script" type="module" src="/init-service-worker.js"></script>', "")
    for attr in ('href="/', 'src="/', 'content="/'):
        html = html.replace(attr, attr + MOUNT[1:])
    return html


def _unpack(data: bytes, into: Path) -> int:
    """``package/dist/*`` of the tarball into ``into``; refuses links and paths that leave it."""
    count = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if parts[:2] != ("package", "dist") or len(parts) < 3:
                continue
            rel = Path(*parts[2:])
            if rel.is_absolute() or ".." in rel.parts:
                raise InstallError(f"tarball member {member.name!r} leaves the package")
            if member.isdir():
                continue
            if not member.isfile():
                raise InstallError(f"tarball member {member.name!r} is not a plain file")
            dest = into / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            with source, open(dest, "wb") as out:
                shutil.copyfileobj(source, out)
            count += 1
    return count


def _rebase(into: Path) -> None:
    index = into / "index.html"
    if not index.is_file():
        raise InstallError(f"{PACKAGE} {VERSION}: no dist/index.html in the tarball")
    index.write_text(_rebase_index(index.read_text(encoding="utf-8")), encoding="utf-8")
    rebased = 0
    for script in into.glob("*.js"):
        text = script.read_text(encoding="utf-8", errors="surrogateescape")
        if PUBLIC_PATH in text:
            script.write_text(text.replace(PUBLIC_PATH, f'__webpack_require__.p = "{MOUNT}";'),
                              encoding="utf-8", errors="surrogateescape")
            rebased += 1
    if not rebased:
        raise InstallError(f"{PACKAGE} {VERSION}: no webpack public path found to serve it under {MOUNT}")
    for sheet in into.glob("*.css"):  # fonts: url(/x.woff2)
        text = sheet.read_text(encoding="utf-8")
        sheet.write_text(text.replace("url(/", "url(" + MOUNT), encoding="utf-8")
    for name in ("app-config.js", "sw.js", "init-service-worker.js", "_redirects", "_headers", "serve.json"):
        (into / name).unlink(missing_ok=True)


def install(target: Path, *, tarball: Path | None = None, force: bool = False, log=print) -> bool:
    """Installs the pinned viewer into ``target``; False if it was already there."""
    if not force and is_current(target):
        log(f"{PACKAGE} {VERSION} already in {target}")
        return False
    if tarball is not None:
        data = tarball.read_bytes()
        source = str(tarball)
    else:
        log(f"downloading {TARBALL_URL}")
        data = download()
        source = TARBALL_URL
    verify(data)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".viewer-", dir=target.parent))
    try:
        files = _unpack(data, staging)
        _rebase(staging)
        (staging / MARKER).write_text(json.dumps({"package": PACKAGE, "version": VERSION, "integrity": INTEGRITY,
                                                  "layout": LAYOUT, "source": source, "files": files}, indent=1), encoding="utf-8")
        old = target.with_name(target.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        staging.rename(target)  # a server never sees half a viewer
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"{PACKAGE} {VERSION} ({files} files, {INTEGRITY[:19]}...) installed in {target}")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.api.viewer",
                                     description=f"Install the OHIF Viewer ({PACKAGE} {VERSION}) served at /viewer/.")
    parser.add_argument("--tarball", type=Path, help="a copied app-3.13.2.tgz instead of the npm registry (offline)")
    parser.add_argument("--dir", type=Path, default=None, help="where (default YILIAN_VIEWER_DIR, else var/viewer)")
    parser.add_argument("--force", action="store_true", help="reinstall even if this version is there")
    args = parser.parse_args(argv)
    try:
        install((args.dir or default_dir()).resolve(), tarball=args.tarball, force=args.force)
    except (InstallError, OSError, tarfile.TarError) as exc:
        print(f"viewer install failed: {exc}", file=sys.stderr)
        return 1
    return 0


