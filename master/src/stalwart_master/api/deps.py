"""Annotated dependencies shared by the routers, and the one place credentials are checked.

Every route declares which kinds of credential may call it by depending on exactly one
:class:`Allow` (through the aliases below: ``CurrentUser``, ``AdminUser``, ``AgentCaller``,
``AllocationDep``, ``UserOrAllocation``, ``Public``). ``tests/security/test_route_credentials.py``
walks the app's route table and fails for a route without one, so no route can forget.
"""

from __future__ import annotations

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
        if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
            raise Unauthorized("missing bearer token; log in with POST /api/v1/auth/login")
        if len(credentials.credentials) > 256:
            raise Unauthorized("malformed token")
        token = users_service.authenticate(session, credentials.credentials)
        kind = Credential(token.kind)
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
