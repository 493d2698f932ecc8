"""The one HTTP wrapper every SDK call goes through: base URL, bearer token, timeouts, retries.

Idempotent reads (GET, HEAD) are retried when the connection itself failed; a POST that may have
reached the master is not sent twice. Any request the master answered with 503 and ``Retry-After``
(its database was unreachable, so the request did not take effect) is sent again after that many
seconds, a few times. httpx is imported on first use so importing the SDK (and running
``stalwart --help``) stays fast.

An ``https://`` master's certificate is always verified: against the PEM CA bundle named by
``$STALWART_CA_CERT`` when set (a private CA), else httpx's default trust store (certifi, or
``SSL_CERT_FILE``). There is no switch to turn verification off. A certificate that does not verify
fails at once, without retries, with a message saying what to set.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from stalwart.client.errors import (
    APIError,
    MasterUnreachable,
    NotLoggedIn,
    StalwartError,
    error_from_response,
)

if TYPE_CHECKING:
    import ssl

    import httpx

_IDEMPOTENT = frozenset({"GET", "HEAD"})
_MAX_RETRY_AFTER = 30.0
Params = Mapping[str, str | int | bool | Sequence[str]]
# The one name for "trust the master's certificate through this CA bundle": the SDK, the CLI, the
# agent (its --ca-cert), the trial runner and the Core API all read it; the agent passes it on.
CA_CERT_ENV = "STALWART_CA_CERT"
# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH: the certificate is trusted but names another host.
_HOSTNAME_MISMATCH = 62


def tls_verify(ca_cert: str | os.PathLike[str] | None = None) -> ssl.SSLContext | bool:
    """What httpx checks a master's certificate with: the PEM bundle ``ca_cert`` (default
    ``$STALWART_CA_CERT``) or, with neither, httpx's default trust store (``True``); never ``False``.

    Example::

        httpx.Client(verify=tls_verify("/etc/stalwart/ca.pem"))
    """
    path = os.fspath(ca_cert) if ca_cert is not None else os.environ.get(CA_CERT_ENV) or None
    if path is None:
        return True
    import ssl

    try:
        # An SSLContext, not the path: httpx 0.28 deprecates verify=<path>.
        return ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:
        reason = f"no PEM certificate in it ({exc.reason or exc})"
        raise StalwartError(f"cannot load the CA bundle {path} ({CA_CERT_ENV}): {reason}") from exc
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StalwartError(f"cannot load the CA bundle {path} ({CA_CERT_ENV}): {reason}") from exc


def tls_failure(exc: BaseException) -> str | None:
    """What went wrong in a failed TLS handshake, and what to do; None when ``exc`` is no TLS failure.

    Such a failure repeats on every try, so callers report it instead of retrying.
    """
    import ssl

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            reason = f"its TLS certificate does not verify ({seen.verify_message or seen.reason})"
            if seen.verify_code == _HOSTNAME_MISMATCH:
                return f"{reason}; use the host name the certificate names in the master URL"
            return f"{reason}; if it is signed by a private CA, set {CA_CERT_ENV} to that CA's PEM bundle"
        if isinstance(seen, ssl.SSLError):
            return f"TLS handshake failed ({seen.reason or seen}); does the master serve HTTPS on this port?"
        seen = seen.__cause__ or seen.__context__
    return None


class HTTPSession:
    """A connection pool to one master, carrying its token."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.25,
        transport: httpx.BaseTransport | None = None,
        ca_cert: str | os.PathLike[str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._transport = transport
        self.ca_cert = ca_cert
        self._client: httpx.Client | None = None

    def _http(self) -> httpx.Client:
        if self._client is None:
            import httpx

            from stalwart import __version__

            self._client = httpx.Client(
                base_url=self.base_url,
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                headers={"User-Agent": f"stalwart-sdk/{__version__}", "Accept": "application/json"},
                transport=self._transport,
                verify=tls_verify(self.ca_cert),
            )
        return self._client

    def close(self) -> None:
        """Close pooled connections; the session reopens them if used again."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
        ok: Sequence[int] = (),
    ) -> httpx.Response:
        """Send one request and return the response, or raise the matching ``StalwartError``.

        Any 2xx is success; statuses in ``ok`` are also returned as is (e.g. the 404 of a HEAD
        that only asks whether something exists).
        """
        import httpx

        method = method.upper()
        all_headers = self._headers(headers, auth)
        attempts = 1 + (self.retries if method in _IDEMPOTENT else 0)
        for unavailable in range(1 + self.retries):
            for attempt in range(attempts):
                try:
                    response = self._http().request(
                        method,
                        path,
                        params=_flatten(params),
                        json=json,
                        content=content,
                        headers=all_headers,
                    )
                    break
                except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
                    # The master restarting or a flaky network; only safe to repeat for reads.
                    if attempt + 1 >= attempts or tls_failure(exc):
                        raise MasterUnreachable(self.base_url, _reason(exc)) from exc
                    time.sleep(self.backoff * 2**attempt)
                except httpx.TransportError as exc:
                    raise MasterUnreachable(self.base_url, _reason(exc)) from exc
            delay = _retry_after(response)
            if delay is None or unavailable >= self.retries:
                break
            time.sleep(delay)
        if response.is_success or response.status_code in ok:
            return response
        raise _error(response)

    @contextmanager
    def stream(
        self,
        path: str,
        *,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
    ) -> Iterator[httpx.Response]:
        """GET ``path`` and yield the response before its body is read, for long streams.

        ``read_timeout`` bounds the wait for each chunk (None: wait as long as the master keeps
        the connection open, as a followed log does while the trial is quiet). A connection lost
        mid-stream raises ``MasterUnreachable``.
        """
        import httpx

        http = self._http()
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0), read=read_timeout)
        request = http.build_request(
            "GET", path, params=_flatten(params), headers=self._headers(headers, True), timeout=timeout
        )
        for attempt in range(1 + self.retries):
            try:
                response = http.send(request, stream=True)
                break
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
                if attempt >= self.retries or tls_failure(exc):
                    raise MasterUnreachable(self.base_url, _reason(exc)) from exc
                time.sleep(self.backoff * 2**attempt)
            except httpx.TransportError as exc:
                raise MasterUnreachable(self.base_url, _reason(exc)) from exc
        try:
            if not response.is_success:
                response.read()
                raise _error(response)
            yield response
        except httpx.TransportError as exc:
            raise MasterUnreachable(self.base_url, _reason(exc)) from exc
        finally:
            response.close()

    def _headers(self, headers: Mapping[str, str] | None, auth: bool) -> dict[str, str]:
        all_headers = dict(headers or {})
        if auth:
            if not self.token:
                raise NotLoggedIn(self.base_url)
            all_headers["Authorization"] = f"Bearer {self.token}"
        return all_headers


def _error(response: httpx.Response) -> APIError:
    return error_from_response(
        response.status_code,
        response.reason_phrase,
        _body(response),
        method=response.request.method,
        url=str(response.request.url),
        retry_after=response.headers.get("Retry-After"),
    )


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait before sending again, when the master said so with a 503."""
    if response.status_code != 503:
        return None
    try:
        return min(max(float(response.headers.get("Retry-After", "")), 0.0), _MAX_RETRY_AFTER)
    except ValueError:
        return None  # absent, or an HTTP date: not the master's hint


def _flatten(params: Params | None) -> list[tuple[str, Any]] | None:
    # httpx repeats list values, which is how the master takes `state` and `label`; drop Nones and
    # spell booleans the way the master parses them.
    if params is None:
        return None
    pairs: list[tuple[str, Any]] = []
    for key, value in params.items():
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if item is None:
                continue
            pairs.append((key, str(item).lower() if isinstance(item, bool) else str(item)))
    return pairs


def _body(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


def _reason(exc: Exception) -> str:
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within the timeout ({type(exc).__name__})"
    tls = tls_failure(exc)
    if tls:
        return tls
    text = str(exc).strip()
    # httpx wraps OS errors as "[Errno 111] Connection refused"; the errno helps nobody reading a CLI.
    if text.startswith("[Errno") and "]" in text:
        text = text.split("]", 1)[1].strip()
    return text or type(exc).__name__
