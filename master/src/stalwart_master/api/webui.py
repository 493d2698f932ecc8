"""The web UI (``webui/``, a React single-page app built by Vite) served by the master at ``/``.

It is the app router's fallback, not a route: it answers only what no API route, mount or
trailing-slash redirect took, so the API keeps its own 404s and 405s. It serves static files and
holds no data (every call the page makes goes through the API and its credentials), which is why
it declares no ``Allow`` and needs none; tests/security/test_route_credentials.py walks API routes.

- ``/assets/…``: Vite's content-hashed files, cached for a year (a new build has new names);
  a missing one is a 404, never the page, so a stale tab fails loudly instead of parsing HTML.
- Any other GET outside the API: a file at the top of the build (favicon, robots.txt) when there
  is one, else ``index.html`` revalidated on every load, so deep links (``/experiments/12``) start
  the app and a new build is picked up at once.
- No build: a short page saying how to make one, never a 500.

The directory is looked up on each request (a few ``stat`` calls), so ``make webui`` needs no
restart. Paths are resolved and must stay inside it: ``..``, dot files and symlinks out are refused.
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.types import Receive, Scope, Send

from stalwart_master.settings import Settings

# Shipped in the wheel (package data, copied there by `make webui`), and the repo's own build for
# an editable install: this file is master/src/stalwart_master/api/webui.py.
PACKAGED_DIR = Path(__file__).resolve().parent.parent / "webui_dist"
REPO_DIR = Path(__file__).resolve().parents[4] / "webui" / "dist"
# Never answered with the page: a wrong API URL must stay a problem+json 404 (``/redoc`` too,
# FastAPI's other docs page, which the master deliberately does not offer: see api/docs_page.py).
NOT_UI = ("/api", "/docs", "/redoc", "/openapi.json", "/metrics", "/health")
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

_NOT_BUILT = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Stalwart</title></head>
<body>
<h1>Stalwart</h1>
<p>The master is running, but its web dashboard is not built.</p>
<p>Build it from the repository with <code>make webui</code> (or point <code>STALWART_WEBUI_DIR</code>
at a built <code>webui/dist</code>), then reload this page.</p>
<p>The REST API is documented at <a href="{docs}">{docs}</a>.</p>
</body>
</html>
"""


def webui_dir(settings: Settings) -> Path | None:
    """The build to serve: ``STALWART_WEBUI_DIR`` alone when set (an operator's choice is not
    second-guessed), else the package's copy, else the repository's ``webui/dist``."""
    candidates = [settings.webui_dir] if settings.webui_dir is not None else [PACKAGED_DIR, REPO_DIR]
    for candidate in candidates:
        if (candidate / "index.html").is_file():
            return candidate
    return None


def _file_inside(root: Path, relative: str) -> Path | None:
    """``root/relative`` when it is a regular file that really lies inside ``root`` (after links)."""
    try:
        base = root.resolve()
        candidate = (base / relative).resolve()
        return candidate if candidate.is_relative_to(base) and candidate.is_file() else None
    except (OSError, ValueError):  # a name too long for the file system, say
        return None


def _answer(settings: Settings, path: str, root_path: str) -> Response:
    root = webui_dir(settings)
    if root is None:
        docs = html.escape(f"{root_path}/docs")
        return HTMLResponse(_NOT_BUILT.format(docs=docs), headers={"Cache-Control": REVALIDATE})
    relative = path.lstrip("/")
    if any(part.startswith(".") for part in relative.split("/")) or "\\" in relative or "\0" in relative:
        raise HTTPException(status_code=404, detail="no such file in the web UI")
    found = _file_inside(root, relative) if relative else None
    if relative.startswith("assets/"):
        if found is None:
            raise HTTPException(status_code=404, detail="no such file in the web UI")
        return FileResponse(found, headers={"Cache-Control": IMMUTABLE})
    return FileResponse(found or root / "index.html", headers={"Cache-Control": REVALIDATE})


def _is_ui_path(path: str) -> bool:
    return not any(path == prefix or path.startswith(prefix + "/") for prefix in NOT_UI)


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the UI from ``app``'s router fallback; everything else keeps the router's 404."""
    not_found = app.router.default

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        root_path = str(scope.get("root_path", "")).rstrip("/")
        path = str(scope.get("path", "/"))
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :] or "/"
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or not _is_ui_path(path):
            await not_found(scope, receive, send)
            return
        response = await run_in_threadpool(_answer, settings, path, root_path)
        await response(scope, receive, send)

    app.router.default = serve
