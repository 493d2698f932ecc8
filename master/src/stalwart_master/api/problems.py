"""The one place where errors become application/problem+json responses."""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError, StatementError
from starlette.exceptions import HTTPException as StarletteHTTPException

from stalwart_master.errors import DomainError

log = logging.getLogger(__name__)

PROBLEM_TYPE_PREFIX = "urn:stalwart:problem:"
# What a 503 asks clients to wait: about how long PostgreSQL takes to come back from a restart.
RETRY_AFTER_SECONDS = 2
_HTTP_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Not authenticated"),
    403: ("forbidden", "Not allowed"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


def problem(
    status: int, slug: str, title: str, detail: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"type": PROBLEM_TYPE_PREFIX + slug, "title": title, "status": status, "detail": detail, **extra}
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
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
    retry_after = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return problem(exc.status, exc.slug, exc.title, exc.detail, headers=headers, **extra)


async def _request_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"path": _location(e["loc"]), "message": _validation_message(e)} for e in exc.errors()]
    detail = "; ".join(f"{e['path']}: {e['message']}" for e in errors)
    return problem(422, "invalid", "Invalid request", detail, errors=errors)


def _allowed_methods(request: Request) -> str | None:
    """Every method the path supports; Starlette only names those of the first route it matched."""
    path = request.url.path
    for template, operations in request.app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)), path):
            return ", ".join(sorted(m.upper() for m in operations))
    return None


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slug, title = _HTTP_SLUGS.get(exc.status_code, ("error", "Error"))
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
    return problem(exc.status_code, slug, title, str(exc.detail), headers=headers)


def _database_error(exc: BaseException) -> str:
    """What the database refused, without the values: PostgreSQL's DETAIL and CONTEXT quote the
    row or the JSON around a bad character (a config's secret_key, say), and some messages quote
    the input, so a server error is named by its class, SQLSTATE and schema names only."""
    error = getattr(exc, "orig", None) or exc
    parts = [type(error).__name__]
    sqlstate = getattr(error, "sqlstate", None)
    if sqlstate:
        parts.append(f"SQLSTATE {sqlstate}")
        diag = getattr(error, "diag", None)
        for field in ("table_name", "column_name", "constraint_name"):
            name = getattr(diag, field, None)
            if name:
                parts.append(f"{field.removesuffix('_name')} {name}")
    else:
        # The driver's own words (connection refused, NUL byte in text), which quote no value.
        parts.append(str(error).split("\n", 1)[0][:300])
    return ", ".join(parts)


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    # The unit of work failed before or at its commit; clients send the request again after the
    # hint (the writes that must not repeat carry idempotency keys).
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, _database_error(exc))
    return problem(
        503,
        "service-unavailable",
        "Service unavailable",
        "the database is unreachable; retry shortly",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _database_refused_value(request: Request, exc: Exception) -> JSONResponse:
    # Values that pass validation but PostgreSQL cannot hold (e.g. a NUL byte in text).
    log.info("database refused a value on %s %s: %s", request.method, request.url.path, _database_error(exc))
    detail = "a value contains characters or numbers the database cannot store"
    return problem(422, "invalid", "Invalid input", detail)


async def _database_conflict(request: Request, exc: Exception) -> JSONResponse:
    # Two requests raced past a service's own check; the constraint keeps the data right.
    log.info("constraint violation on %s %s: %s", request.method, request.url.path, _database_error(exc))
    return problem(409, "conflict", "Conflict", "the change conflicts with data stored meanwhile; retry")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(
        500, "internal", "Internal server error", "an unexpected error occurred; see the master log"
    )


async def _unexpected_database_error(request: Request, exc: Exception) -> JSONResponse:
    # A bug, but its traceback's messages would quote the values (see _database_error): its frames
    # find the statement. Handled here, so the server does not log the full exception again.
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error(
        "unhandled database error on %s %s: %s\nTraceback (messages left out):\n%s",
        request.method,
        request.url.path,
        _database_error(exc),
        frames.rstrip(),
    )
    return problem(
        500, "internal", "Internal server error", "an unexpected error occurred; see the master log"
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_down)
    app.add_exception_handler(InterfaceError, _database_down)
    app.add_exception_handler(DataError, _database_refused_value)
    app.add_exception_handler(IntegrityError, _database_conflict)
    app.add_exception_handler(StatementError, _unexpected_database_error)
    app.add_exception_handler(Exception, _unexpected)
