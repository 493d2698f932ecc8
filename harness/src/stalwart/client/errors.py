"""Every failure the SDK raises on purpose, as one tree rooted at :class:`StalwartError`.

Catch ``StalwartError`` to handle them all, a family (``APIError``, ``MasterUnreachable``) to
handle a kind, or a leaf such as ``NotFoundError`` to act on one answer of the master.

Example::

    from stalwart.client import Client, NotFoundError

    try:
        Client().get_experiment(42)
    except NotFoundError as exc:
        print(exc.detail)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "APIError",
    "BadRequestError",
    "ConflictError",
    "DigestMismatch",
    "FieldError",
    "ForbiddenError",
    "InvalidTransitionError",
    "MasterUnreachable",
    "NotFoundError",
    "NotLoggedIn",
    "PayloadTooLargeError",
    "StalwartError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "ValidationError",
    "WaitTimeout",
    "error_from_response",
]

_PROBLEM_PREFIX = "urn:stalwart:problem:"


class StalwartError(Exception):
    """Base of every error the SDK raises on purpose."""


class MasterUnreachable(StalwartError):
    """The master could not be reached: refused connection, DNS failure, timeout, dropped connection."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the master at {url}: {reason}")
        self.url = url
        self.reason = reason


class NotLoggedIn(StalwartError):
    """No token is known for this master, so an authenticated call was not even attempted."""

    def __init__(self, url: str) -> None:
        super().__init__(f"not logged in to {url}; run `stalwart user login`")
        self.url = url


class WaitTimeout(StalwartError):
    """``wait_for_experiment`` reached its deadline; ``experiment`` is the last state seen."""

    def __init__(self, experiment: Any, timeout: float) -> None:
        super().__init__(
            f"timed out after {timeout:g}s waiting for experiment {experiment.id} (state {experiment.state})"
        )
        self.experiment = experiment
        self.timeout = timeout


class DigestMismatch(StalwartError):
    """Downloaded bytes do not hash to the SHA-256 they were asked for."""


@dataclass(frozen=True)
class FieldError:
    """One failing field of a 422 answer: a dotted path (``searcher.max_trials``) and a reason."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class APIError(StalwartError):
    """The master answered with an error (``application/problem+json``).

    ``type`` is the short problem kind (``not-found``, ``invalid-transition``, ...), ``errors`` the
    per-field reasons of a 422.
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        *,
        type: str = "",
        errors: tuple[FieldError, ...] = (),
        method: str = "",
        url: str = "",
    ) -> None:
        super().__init__(f"{title}: {detail}" if detail else title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.errors = errors
        self.method = method
        self.url = url


class BadRequestError(APIError):
    """400: the input could not be parsed (YAML syntax, a corrupt or unsafe archive)."""


class UnauthorizedError(APIError):
    """401: the token is missing, unknown, expired or revoked, or the password is wrong."""


class ForbiddenError(APIError):
    """403: only the owner or an admin may do this."""


class NotFoundError(APIError):
    """404: no such experiment, context, user or route."""


class ConflictError(APIError):
    """409: the request clashes with the current state (a taken user name, an illegal transition)."""


class InvalidTransitionError(ConflictError):
    """409 ``invalid-transition``: the experiment's current state does not allow this verb."""


class PayloadTooLargeError(APIError):
    """413: a context or config over the master's size limit."""


class ValidationError(APIError):
    """422: the input parses but is wrong; ``errors`` names each failing field path."""


class TooManyRequestsError(APIError):
    """429: throttled (too many failed logins); ``retry_after`` is the master's wait in seconds."""

    retry_after: float | None = None


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: TooManyRequestsError,
}


def error_from_response(
    status: int,
    reason: str,
    body: Any,
    *,
    method: str = "",
    url: str = "",
    retry_after: str | None = None,
) -> APIError:
    """Build the right ``APIError`` subclass from a status and a decoded problem+json body.

    ``body`` may be anything (a proxy's HTML page decodes to a string): fields are read defensively
    so a malformed error still becomes a readable exception. ``retry_after`` is the raw
    ``Retry-After`` header, kept on a ``TooManyRequestsError``.
    """
    problem: dict[str, Any] = body if isinstance(body, dict) else {}
    raw_type = str(problem.get("type") or "")
    kind = raw_type.removeprefix(_PROBLEM_PREFIX)
    title = str(problem.get("title") or reason or f"HTTP {status}")
    detail = problem.get("detail")
    if detail is None:
        detail = body.strip()[:200] if isinstance(body, str) else ""
    errors = tuple(
        FieldError(path=str(item.get("path") or ""), message=str(item.get("message") or ""))
        for item in problem.get("errors") or ()
        if isinstance(item, dict)
    )
    cls = _BY_STATUS.get(status, APIError)
    if cls is ConflictError and kind == "invalid-transition":
        cls = InvalidTransitionError
    error = cls(status, title, str(detail), type=kind, errors=errors, method=method, url=url)
    if isinstance(error, TooManyRequestsError):
        error.retry_after = _seconds(retry_after)
    return error


def _seconds(header: str | None) -> float | None:
    # Only the delta-seconds form: the master never sends an HTTP date.
    try:
        return max(float(header), 0.0) if header else None
    except ValueError:
        return None
