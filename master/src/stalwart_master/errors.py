"""Domain errors raised by services and mapped to problem+json in one place (``api/problems.py``).

Services never import FastAPI; they raise these and the API layer turns each into a response with a
stable ``type``. Keep the set small: one class per kind of failure a client can act on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FieldError:
    """One failing field: a dotted path into the input and a reason a person can act on."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class DomainError(Exception):
    """Base of every error a service raises on purpose; anything else is a bug (500)."""

    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}


class Invalid(DomainError):
    """The input is well-formed but wrong; ``errors`` names each failing field path."""

    status = 422
    slug = "invalid"
    title = "Invalid input"

    def __init__(self, errors: list[FieldError], *, title: str | None = None) -> None:
        self.errors = errors
        if title:
            self.title = title
        super().__init__("; ".join(str(e) for e in errors) or "invalid input")


class BadRequest(DomainError):
    """The input cannot be parsed at all (e.g. a YAML syntax error or a corrupt archive)."""

    status = 400
    slug = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str, *, title: str | None = None, extra: dict[str, Any] | None = None) -> None:
        if title:
            self.title = title
        super().__init__(detail, extra=extra)


class Unauthorized(DomainError):
    status = 401
    slug = "unauthorized"
    title = "Not authenticated"


class Forbidden(DomainError):
    status = 403
    slug = "forbidden"
    title = "Not allowed"


class NotFound(DomainError):
    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(DomainError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class InvalidTransition(Conflict):
    """A lifecycle verb that the experiment's current state does not allow."""

    slug = "invalid-transition"
    title = "Invalid state transition"


class PayloadTooLarge(DomainError):
    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class TooManyRequests(DomainError):
    """Throttled (e.g. repeated failed logins); ``retry_after`` seconds go out as ``Retry-After``."""

    status = 429
    slug = "too-many-requests"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = max(1, retry_after)


class ServiceUnavailable(DomainError):
    status = 503
    slug = "service-unavailable"
    title = "Service unavailable"


@dataclass
class ErrorList:
    """Collects field errors while validating so all of them are reported at once."""

    errors: list[FieldError] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def raise_if_any(self, title: str | None = None) -> None:
        if self.errors:
            raise Invalid(self.errors, title=title)
