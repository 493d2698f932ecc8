"""The API docs page (``/docs``, Swagger UI) with its script and stylesheet served by the master.

FastAPI's own page loads them from cdn.jsdelivr.net: a master on a network without internet shows
a blank page, and a browser that trusts the master would run whatever the CDN serves. The files come
from the ``fastapi-offline`` package (Swagger UI's dist files, updated with each release), so
upgrading them is a dependency bump, not a vendored copy. ReDoc is not offered: one docs page, and
it would need ``'unsafe-eval'`` and blob: workers in the Content-Security-Policy.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from stalwart_master.api.deps import Public
from stalwart_master.api.security_headers import content_security_policy

DOCS_URL = "/docs"
# swagger-ui-bundle.js, swagger-ui.css and favicon.png (also redoc.standalone.js, unused).
ASSETS_URL = "/docs/assets"
ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.DOTALL | re.IGNORECASE)


def inline_script_hashes(html: str) -> list[str]:
    """CSP source expressions admitting exactly the inline scripts of ``html``, and no others."""
    digests = (hashlib.sha256(body.encode()).digest() for body in _INLINE_SCRIPT.findall(html))
    return [f"'sha256-{base64.b64encode(digest).decode()}'" for digest in digests]


def install(app: FastAPI) -> None:
    """Serve ``/docs`` and its assets; ``app`` must be built with ``docs_url=None, redoc_url=None``."""
    openapi_url = app.openapi_url
    if openapi_url is None:  # no OpenAPI description, nothing to show
        return
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    def docs(request: Request, _: Public) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} API",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            # Never ask validator.swagger.io about the description (the policy would block it anyway).
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
        )
        html = bytes(page.body).decode()
        page.headers["Content-Security-Policy"] = content_security_policy(
            script_hashes=inline_script_hashes(html)
        )
        return page
