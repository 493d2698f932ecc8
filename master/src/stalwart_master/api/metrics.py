"""Prometheus metrics for the master itself, scraped with a bearer token like every other route."""

from __future__ import annotations

import time

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stalwart_master.api.deps import CurrentUser

registry = CollectorRegistry()
REQUESTS = Counter(
    "stalwart_http_requests_total", "HTTP requests served", ["method", "route", "status"], registry=registry
)
LATENCY = Histogram(
    "stalwart_http_request_seconds", "HTTP request latency", ["method", "route"], registry=registry
)

router = APIRouter(tags=["master"])


@router.get("/metrics", response_class=Response)
def metrics(_: CurrentUser) -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class _Observe:
    """Counts and times every request. Plain ASGI, not ``@app.middleware("http")``: Starlette's
    ``BaseHTTPMiddleware`` hides a client's disconnect from the route, and a long poll must notice
    that its agent hung up (api/agents.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            # The route template, never the raw path, so ids do not explode the label space.
            route = getattr(scope.get("route"), "path", "unmatched")
            LATENCY.labels(scope["method"], route).observe(time.perf_counter() - started)
            REQUESTS.labels(scope["method"], route, str(status)).inc()


def install(app: FastAPI) -> None:
    app.add_middleware(_Observe)
    app.include_router(router)
