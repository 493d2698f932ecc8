"""ETags on the API's JSON reads, so a page that polls gets ``304 Not Modified`` while nothing changed.

The tag is a hash of the body, computed after the route answered: no route has to know about it,
and two answers with the same bytes share a tag whoever asked. Only bodies sent in one piece are
tagged (every ``JSONResponse`` is); a streamed answer, such as a followed log, passes through
untouched and unbuffered.

Caching: API answers are ``no-store`` (api/security_headers.py), which a client that sends
``If-None-Match`` itself still profits from. A browser's page authenticated by the session cookie
gets ``private, no-cache`` instead: its own cache may keep the answer, but must ask the master
before every use, so ``fetch`` revalidates on its own. Shared caches keep nothing either way.
"""

from __future__ import annotations

import hashlib

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stalwart_master.api.deps import SESSION_COOKIE

TAGGED_PREFIX = "/api/v1/"
# A bigger body is sent untagged: hashing it costs more than a poll saves.
MAX_TAGGED_BYTES = 8 * 1024 * 1024
BROWSER_CACHE_CONTROL = "private, no-cache"


def body_tag(body: bytes) -> str:
    """A weak tag: equal bytes, equal tag (the same JSON may be encoded differently tomorrow)."""
    return f'W/"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'


def matches(if_none_match: str | None, tag: str) -> bool:
    """``If-None-Match`` compares weakly: ``W/"x"`` and ``"x"`` are the same tag; ``*`` is any."""
    if not if_none_match:
        return False
    opaque = tag.removeprefix("W/")
    return any(
        candidate == "*" or candidate.removeprefix("W/") == opaque
        for candidate in (part.strip() for part in if_none_match.split(","))
    )


def _taggable(start: Message) -> bool:
    headers = Headers(raw=start.get("headers", []))
    return (
        start["status"] == 200
        and headers.get("content-type", "").startswith("application/json")
        and "etag" not in headers
    )


class _ETags:
    """Plain ASGI, not ``BaseHTTPMiddleware``, for the reason given in api/metrics.py."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or not str(scope.get("path", "")).startswith(TAGGED_PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        request = HTTPConnection(scope)
        if_none_match = request.headers.get("if-none-match")
        # The same test deps.Allow makes: a bearer header wins over the cookie.
        browser = "authorization" not in request.headers and SESSION_COOKIE in request.cookies
        held: Message | None = None  # the response's start, kept until its body shows its size
        passing = False

        async def send_tagged(message: Message) -> None:
            nonlocal held, passing
            if passing:
                await send(message)
            elif message["type"] == "http.response.start":
                if _taggable(message):
                    held = message
                else:
                    passing = True
                    await send(message)
            elif message["type"] == "http.response.body" and held is not None:
                start, held, passing = held, None, True
                body = bytes(message.get("body", b""))
                if message.get("more_body", False) or len(body) > MAX_TAGGED_BYTES:
                    await send(start)
                    await send(message)
                    return
                tag = body_tag(body)
                headers = MutableHeaders(scope=start)
                headers["ETag"] = tag
                if browser:
                    headers["Cache-Control"] = BROWSER_CACHE_CONTROL
                if matches(if_none_match, tag):
                    del headers["content-length"]
                    del headers["content-type"]
                    start["status"] = 304
                    message = {"type": "http.response.body", "body": b"", "more_body": False}
                await send(start)
                await send(message)
            else:
                await send(message)

        await self.app(scope, receive, send_tagged)
        if held is not None:  # a start without a body: never seen, but it must not vanish
            await send(held)


def install(app: FastAPI) -> None:
    """Install inside api/security_headers.py's middleware, so the Cache-Control set here stands."""
    app.add_middleware(_ETags)
