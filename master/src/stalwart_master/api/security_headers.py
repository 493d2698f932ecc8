"""Security headers on every response the master sends, so no route has to remember them.

The Content-Security-Policy allows only the master's own origin: the API docs (api/docs_page.py)
and the web UI load their scripts and styles from the master, never from a CDN. A page that needs
more (the docs page's one inline script) sets its own policy, built with
``content_security_policy``; a header a route set itself is never overwritten.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stalwart_master.settings import Settings

# Answers under here may carry tokens (login, agent and API tokens) or private data: no cache,
# shared or not, may keep them.
API_PREFIX = "/api/"


def content_security_policy(*, script_hashes: Sequence[str] = ()) -> str:
    """The master's policy; ``script_hashes`` (``'sha256-…'``) admit a page's own inline scripts."""
    script_src = " ".join(("'self'", *script_hashes))
    return "; ".join(
        (
            "default-src 'self'",
            f"script-src {script_src}",
            "style-src 'self'",
            # Swagger UI's stylesheet draws its icons from data: URIs.
            "img-src 'self' data:",
            "font-src 'self'",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


class _SecurityHeaders:
    """Plain ASGI, not ``BaseHTTPMiddleware``: that one hides a client's disconnect from the route,
    and the agents' long poll must notice it (see api/metrics.py)."""

    def __init__(self, app: ASGIApp, *, hsts_max_age_seconds: int) -> None:
        self.app = app
        self.common = {
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": content_security_policy(),
        }
        # Only on requests that came over HTTPS: sent over plain HTTP it would mean nothing to a
        # browser, and a master without TLS must never claim it.
        self.hsts = f"max-age={hsts_max_age_seconds}" if hsts_max_age_seconds > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = str(scope.get("path", "")).startswith(API_PREFIX)
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.common.items():
                    headers.setdefault(name, value)
                if api:
                    headers.setdefault("Cache-Control", "no-store")
                if https and self.hsts:
                    headers.setdefault("Strict-Transport-Security", self.hsts)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install(app: FastAPI, settings: Settings) -> None:
    """Add the headers to every response ``app`` sends (``settings.tls``: the HSTS max-age)."""
    app.add_middleware(_SecurityHeaders, hsts_max_age_seconds=settings.tls.hsts_max_age_seconds)
