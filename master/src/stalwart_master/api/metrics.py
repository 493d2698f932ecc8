"""Prometheus metrics for the master itself, scraped with a bearer token like every other route."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from stalwart_master.api.deps import require_token

registry = CollectorRegistry()
REQUESTS = Counter(
    "stalwart_http_requests_total", "HTTP requests served", ["method", "route", "status"], registry=registry
)
LATENCY = Histogram(
    "stalwart_http_request_seconds", "HTTP request latency", ["method", "route"], registry=registry
)

router = APIRouter(tags=["master"], dependencies=[require_token])


@router.get("/metrics", response_class=Response)
def metrics() -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI) -> None:
    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        # The route template, never the raw path, so ids do not explode the label space.
        route = getattr(request.scope.get("route"), "path", "unmatched")
        LATENCY.labels(request.method, route).observe(time.perf_counter() - started)
        REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        return response

    app.include_router(router)
