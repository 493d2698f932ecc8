"""The one HTTP session the harness uses to talk to the master, with the allocation's token.

Not the SDK's session: that one reads a user's token cache, while code inside a trial acts with
the allocation token the agent handed it. Bodies are encoded here because metric values may be
NaN or infinite, which httpx's own JSON encoder refuses. The master's certificate is trusted the
SDK's way (``$STALWART_CA_CERT``, which the agent sets when it has ``--ca-cert``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from stalwart.core._errors import MasterError

if TYPE_CHECKING:
    import httpx

# httpx logs every request at INFO: in a trial's log that is noise around the user's own lines.
logging.getLogger("httpx").setLevel(logging.WARNING)

# 408/429 and 5xx mean "try again later"; any other 4xx will fail the same way every time.
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def api_base(master_url: str) -> str:
    """``http://host:8080`` or ``http://host:8080/api/v1`` → ``http://host:8080/api/v1``."""
    base = master_url.rstrip("/")
    return base if base.endswith("/api/v1") else base + "/api/v1"


class AllocationSession:
    """A thread-safe connection pool to the master, authenticated as one allocation.

    ``transport`` is the seam tests use to stand in for the network.
    """

    def __init__(
        self,
        master_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.master_url = master_url
        self.base_url = api_base(master_url)
        self._token = token
        self._timeout = timeout
        self._transport = transport
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                import httpx

                from stalwart import __version__
                from stalwart.client._http import tls_verify
                from stalwart.client.errors import StalwartError

                try:
                    verify = tls_verify()
                except StalwartError as exc:
                    raise MasterError(str(exc), retryable=False) from exc
                self._client = httpx.Client(
                    base_url=self.base_url,
                    timeout=httpx.Timeout(self._timeout, connect=min(self._timeout, 10.0)),
                    headers={
                        "Authorization": f"Bearer {self._token}",
                        "User-Agent": f"stalwart-harness/{__version__}",
                        "Accept": "application/json",
                    },
                    transport=self._transport,
                    verify=verify,
                )
            return self._client

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str | int] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """Send one request; return a 2xx response or raise ``MasterError`` (``retryable`` set)."""
        import httpx

        headers = {}
        content = None
        if body is not None:
            content = json.dumps(body).encode()  # allow_nan: NaN/Infinity travel as JSON tokens
            headers["Content-Type"] = "application/json"
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        try:
            response = self._http().request(
                method, path, content=content, headers=headers, params=params, **extra
            )
        except httpx.TransportError as exc:
            from stalwart.client._http import tls_failure

            tls = tls_failure(exc)
            if tls:
                # Retrying cannot make a certificate trusted; fail with what to change instead.
                raise MasterError(f"{method} {path}: master at {self.master_url}: {tls}") from exc
            raise MasterError(
                f"{method} {path}: master at {self.master_url} unreachable ({type(exc).__name__}: {exc})",
                retryable=True,
            ) from exc
        if response.is_success:
            return response
        raise MasterError(
            f"{method} {path}: {response.status_code} {_detail(response)}",
            status=response.status_code,
            retryable=response.status_code in _RETRYABLE_STATUS,
        )

    def request_until(
        self, method: str, path: str, *, body: Any = None, within: float, max_delay: float
    ) -> httpx.Response:
        """``request``, retried with backoff (0.2 s doubling up to ``max_delay``) while the failure
        is retryable and ``within`` seconds have not passed; then the last ``MasterError`` is raised.

        For the calls a run must get through once (a searcher metric, a preemption ack, an early
        exit): losing one would change the trial's outcome.
        """
        delay = 0.2
        deadline = time.monotonic() + within
        while True:
            try:
                return self.request(method, path, body=body)
            except MasterError as exc:
                if not exc.retryable or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, max_delay)

    def close(self) -> None:
        """Close pooled connections."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _detail(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(data, dict):
        return str(data.get("detail") or data.get("title") or data)[:300]
    return str(data)[:300]
