"""The desks: server-rendered pages for people, on the same public API as every other client.

One module per desk (``signin``, ``admin``, ``reader``, ``clinic``), each with its ``routes``;
:func:`install` adds every module of this package that has them, so a new desk needs no edit
here.  The shared page shell is :mod:`.layout`; scripts and styles are in ``static/``, served
at ``/desk/static/`` without a session (they hold no data).  See docs/desks.md.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

from aiohttp import web

from ..problems import Problem

STATIC = Path(__file__).resolve().parent / "static"
TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
         ".png": "image/png", ".woff2": "font/woff2", ".json": "application/json"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = STATIC / name
    if not NAME.match(name) or path.suffix not in TYPES or not path.is_file():
        raise Problem(404, f"no desk file {name!r}")
    # no-cache: revalidated on every load (ETag), so a new release's script is never mixed with an old one
    return web.FileResponse(path, headers={"Content-Type": TYPES[path.suffix] + "; charset=utf-8"
                                           if path.suffix in (".js", ".mjs", ".css", ".svg", ".json")
                                           else TYPES[path.suffix],
                                           "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


def install(app: web.Application) -> None:
    app.router.add_get("/desk/static/{name}", static)
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        if module == "layout":
            continue
        routes = getattr(importlib.import_module(f"{__name__}.{module}"), "routes", None)
        if routes is not None:
            app.router.add_routes(routes)
