"""Annotated dependencies shared by the routers, and the one place credentials are checked.

Every route declares which kinds of credential may call it by depending on exactly one
:class:`Allow` (through the aliases below: ``CurrentUser``, ``AdminUser``, ``AgentCaller``,
``AllocationDep``, ``UserOrAllocation``, ``Public``). ``tests/security/test_route_credentials.py``
walks the app's route table and fails for a route without one, so no route can forget.

A credential comes as a bearer token or, for the web UI, as the ``stalwart_session`` cookie that
``POST /api/v1/auth/login`` sets with ``cookie: true``. The browser sends a cookie on its own, so a
cookie is only ever a login session and every state change made with one must also carry the
``X-CSRF-Token`` header: a value derived from the session, which only a page of the master's own
origin can read (from the ``stalwart_csrf`` cookie) and so send.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from stalwart_master.db.orm import Allocation, Token, User
from stalwart_master.errors import Forbidden, Unauthorized
from stalwart_master.services import users as users_service
from stalwart_master.settings import Settings


def get_session(request: Request) -> Iterator[Session]:
    """A session per request; routes commit explicitly, anything left over is rolled back."""
    session: Session = request.app.state.sessions()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]

_bearer = HTTPBearer(auto_error=False, description="A session from POST /api/v1/auth/login or an API token")

SESSION_COOKIE = "stalwart_session"
CSRF_COOKIE = "stalwart_csrf"
CSRF_HEADER = "X-CSRF-Token"
# Methods that change nothing; every other one needs the CSRF header when a cookie authenticates it.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CSRF_PURPOSE = b"stalwart csrf v1"


def csrf_token(session_secret: str) -> str:
    """The CSRF value of a cookie session: derived from its secret, so nothing more is stored, and
    one-way, so the page that reads it learns nothing about the secret."""
    return hmac.new(session_secret.encode(), _CSRF_PURPOSE, hashlib.sha256).hexdigest()


def _presented_secret(request: Request, credentials: HTTPAuthorizationCredentials | None) -> tuple[str, bool]:
    """The secret the request carries and whether it came in the session cookie (a bearer wins)."""
    # HTTPBearer hands over only a well-formed "Bearer <token>"; anything else reads as absent.
    if credentials is not None and credentials.credentials:
        return credentials.credentials, False
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return cookie, True
    raise Unauthorized(
        f"missing bearer token or {SESSION_COOKIE} cookie; log in with POST /api/v1/auth/login"
    )


def _check_csrf(request: Request, session_secret: str) -> None:
    if request.method in SAFE_METHODS:
        return
    presented = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(presented.encode(), csrf_token(session_secret).encode()):
        raise Forbidden(
            f"missing or wrong CSRF token; send the {CSRF_COOKIE} cookie's value as {CSRF_HEADER}"
        )


class Credential(StrEnum):
    """The kinds of bearer token; ``tokens.kind`` stores these values."""

    SESSION = "user"  # a person's login: expires, revoked by logout
    API_TOKEN = "api"  # `stalwart token create`: a user's scripts, optional expiry
    AGENT = "agent"  # one agent id: register, poll, report its own allocations
    ALLOCATION = "allocation"  # one run of one trial: report and read for that trial only


USER_KINDS = frozenset({Credential.SESSION, Credential.API_TOKEN})


@dataclass(frozen=True)
class Caller:
    """Who is calling, as established from the credential (never from the request body)."""

    token: Token
    kind: Credential
    address: str = ""

    @property
    def user(self) -> User:
        return self.token.user

    @property
    def agent_id(self) -> str | None:
        return self.token.agent_id

    @property
    def allocation_id(self) -> object:
        return self.token.allocation_id


class Allow:
    """A route's declared credentials. ``Allow()`` with ``public=True`` declares a public route."""

    def __init__(self, *kinds: Credential, admin: bool = False, public: bool = False) -> None:
        if public == bool(kinds):
            raise ValueError("a route is either public or names the credentials it allows")
        self.kinds = frozenset(kinds)
        self.admin = admin
        self.public = public

    def __repr__(self) -> str:
        if self.public:
            return "Allow(public)"
        return f"Allow({', '.join(sorted(self.kinds))}{', admin' if self.admin else ''})"

    def __call__(
        self,
        request: Request,
        session: SessionDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Caller | None:
        if self.public:
            return None
        secret, from_cookie = _presented_secret(request, credentials)
        if len(secret) > 256:
            raise Unauthorized("malformed token")
        token = users_service.authenticate(session, secret)
        kind = Credential(token.kind)
        if from_cookie:
            if kind is not Credential.SESSION:
                # Only a login belongs in a browser; other tokens are sent as bearer tokens.
                raise Unauthorized(f"the {SESSION_COOKIE} cookie must hold a login session")
            _check_csrf(request, secret)
        if kind not in self.kinds:
            raise Forbidden(_refusal(kind))
        if self.admin and not token.user.admin:
            raise Forbidden("this needs a cluster admin")
        caller = Caller(token=token, kind=kind, address=client_address(request))
        if users_service.use_is_stale(token):
            # In a transaction of its own: reads never commit theirs, it is rolled back.
            with request.app.state.sessions.begin() as own:
                users_service.record_use(own, token)
        request.state.caller = caller  # the audit log and access log name who acted
        return caller


def _refusal(kind: Credential) -> str:
    return {
        Credential.AGENT: "agent credentials may only call the agent routes",
        Credential.ALLOCATION: "a trial's allocation token may only report for and read its own trial",
    }.get(kind, "this route is for agents or trials, not for users")


ALLOW_USER = Allow(Credential.SESSION, Credential.API_TOKEN)
ALLOW_ADMIN = Allow(Credential.SESSION, Credential.API_TOKEN, admin=True)
ALLOW_AGENT = Allow(Credential.AGENT)
ALLOW_ALLOCATION = Allow(Credential.ALLOCATION)
ALLOW_USER_OR_ALLOCATION = Allow(Credential.SESSION, Credential.API_TOKEN, Credential.ALLOCATION)
ALLOW_PUBLIC = Allow(public=True)

UserCaller = Annotated[Caller, Depends(ALLOW_USER)]
AdminCaller = Annotated[Caller, Depends(ALLOW_ADMIN)]
AgentCaller = Annotated[Caller, Depends(ALLOW_AGENT)]
AllocationCaller = Annotated[Caller, Depends(ALLOW_ALLOCATION)]
UserOrAllocation = Annotated[Caller, Depends(ALLOW_USER_OR_ALLOCATION)]
Public = Annotated[None, Depends(ALLOW_PUBLIC)]


def _user(caller: UserCaller) -> User:
    return caller.user


def _admin(caller: AdminCaller) -> User:
    return caller.user


CurrentUser = Annotated[User, Depends(_user)]
AdminUser = Annotated[User, Depends(_admin)]


def _allocation(caller: AllocationCaller, session: SessionDep) -> Allocation:
    from stalwart_master.services.allocations import allocation_for_token

    return allocation_for_token(session, caller.token)


AllocationDep = Annotated[Allocation, Depends(_allocation)]


def require_agent(caller: Caller, agent_id: str | None) -> str:
    """The agent id this credential is bound to; refuses acting for any other agent."""
    if caller.agent_id is None:
        raise Forbidden("this agent credential is bound to no agent id; create one with --agent-id")
    if agent_id is not None and agent_id != caller.agent_id:
        raise Forbidden(f"this agent credential is for agent {caller.agent_id!r}, not {agent_id!r}")
    return caller.agent_id


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def wake_scheduler(request: Request) -> None:
    scheduler = getattr(request.app.state, "scheduler", None)
    if scheduler is not None:
        scheduler.wake()


def declared_allows(dependant: Any) -> list[Allow]:
    """Every ``Allow`` a route depends on, however deep; a correct route has exactly one."""
    found: list[Allow] = []
    for sub in dependant.dependencies:
        if isinstance(sub.call, Allow):
            found.append(sub.call)
        found.extend(declared_allows(sub))
    return found


@dataclass(frozen=True)
class RouteEntry:
    path: str
    methods: frozenset[str]
    dependant: Any


def route_table(routes: Iterable[Any]) -> list[RouteEntry]:
    """Every API route with its full path, also inside included routers (which newer FastAPI
    keeps as branches rather than copying their routes into the app)."""
    table: list[RouteEntry] = []
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:
            table.extend(
                RouteEntry(c.path, frozenset(c.methods or ()), c.dependant)
                for c in contexts()
                if c.dependant is not None
            )
        elif getattr(route, "dependant", None) is not None:
            table.append(RouteEntry(route.path, frozenset(route.methods or ()), route.dependant))
    return table


def public_routes(routes: Iterable[Any]) -> set[tuple[str, str]]:
    """(method, path) of the routes that declared themselves public, for the OpenAPI document."""
    return {
        (method, entry.path)
        for entry in route_table(routes)
        if any(a.public for a in declared_allows(entry.dependant))
        for method in entry.methods
    }
