"""The one place where errors become application/problem+json responses."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from stalwart_master.errors import DomainError

log = logging.getLogger(__name__)

PROBLEM_TYPE_PREFIX = "urn:stalwart:problem:"
_HTTP_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Not authenticated"),
    403: ("forbidden", "Not allowed"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


def problem(status: int, slug: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": PROBLEM_TYPE_PREFIX + slug, "title": title, "status": status, "detail": detail, **extra}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _validation_message(error: dict[str, Any]) -> str:
    kind = error.get("type", "")
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind in ("json_invalid", "model_attributes_type"):
        return "body is not valid JSON"
    message = str(error.get("msg", "invalid"))
    return message.removeprefix("Value error, ")[:1].lower() + message.removeprefix("Value error, ")[1:]


async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    extra = dict(exc.extra)
    if hasattr(exc, "errors"):
        extra["errors"] = [e.as_dict() for e in exc.errors]
    return problem(exc.status, exc.slug, exc.title, exc.detail, **extra)


async def _request_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"path": _location(e["loc"]), "message": _validation_message(e)} for e in exc.errors()]
    detail = "; ".join(f"{e['path']}: {e['message']}" for e in errors)
    return problem(422, "invalid", "Invalid request", detail, errors=errors)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slug, title = _HTTP_SLUGS.get(exc.status_code, ("error", "Error"))
    return problem(exc.status_code, slug, title, str(exc.detail))


async def _database_down(_: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", exc)
    return problem(
        503, "service-unavailable", "Service unavailable", "the database is unreachable; retry shortly"
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(
        500, "internal", "Internal server error", "an unexpected error occurred; see the master log"
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_down)
    app.add_exception_handler(DBAPIError, _database_down)
    app.add_exception_handler(Exception, _unexpected)
