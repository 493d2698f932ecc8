"""What every part of ``Client`` shares: the master's address, the HTTP session and its token."""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Any, Literal, Self

from stalwart.client import auth
from stalwart.client._http import HTTPSession

if TYPE_CHECKING:
    import httpx


OrderBy = Literal["id", "name", "state", "created_at", "ended_at"]
ModelOrderBy = Literal["id", "name", "created_at", "updated_at"]


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _model_path(name: str) -> str:
    # Names may hold spaces, '%', '?' or '#': each must reach the master as one path segment.
    return f"/api/v1/models/{urllib.parse.quote(name, safe='')}"


class ClientBase:
    """The connection; the noun mixins (``_experiments`` ...) add one method per route."""

    def __init__(
        self,
        master: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.master = auth.resolve_master(master)
        if token is None:
            cached = auth.resolve_token(self.master)
            token = cached.token if cached else None
        self._session = HTTPSession(
            self.master, token=token, timeout=timeout, retries=retries, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections."""
        self._session.close()

    @property
    def token(self) -> str | None:
        """The bearer token sent with each call (None when not logged in)."""
        return self._session.token

    @token.setter
    def token(self, value: str | None) -> None:
        self._session.token = value

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._session.request(method, path, **kwargs).json()
