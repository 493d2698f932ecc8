"""Annotated dependencies shared by the routers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

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

_bearer = HTTPBearer(auto_error=False, description="A token from POST /api/v1/auth/login")


def get_token(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Token:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("missing bearer token; log in with POST /api/v1/auth/login")
    if len(credentials.credentials) > 256:
        raise Unauthorized("malformed token")
    return users_service.authenticate(session, credentials.credentials)


TokenDep = Annotated[Token, Depends(get_token)]


def get_user(token: TokenDep) -> User:
    if token.kind == "agent":  # an agent token is made by an admin but must not act as one
        raise Forbidden("agent tokens may only call the agent routes")
    return token.user


CurrentUser = Annotated[User, Depends(get_user)]


def get_admin(user: CurrentUser) -> User:
    if not user.admin:
        raise Forbidden("this needs an admin")
    return user


AdminUser = Annotated[User, Depends(get_admin)]

# Routers outside the public allowlist declare this so no route can forget authentication.
require_token = Depends(get_token)


def get_agent_token(token: TokenDep) -> Token:
    if token.kind != "agent":
        raise Forbidden("this route is for agents; create a token with `stalwart agent token create`")
    return token


AgentToken = Annotated[Token, Depends(get_agent_token)]


def get_allocation(token: TokenDep, session: SessionDep) -> Allocation:
    from stalwart_master.services.allocations import allocation_for_token

    return allocation_for_token(session, token)


AllocationDep = Annotated[Allocation, Depends(get_allocation)]


def wake_scheduler(request: Request) -> None:
    scheduler = getattr(request.app.state, "scheduler", None)
    if scheduler is not None:
        scheduler.wake()
