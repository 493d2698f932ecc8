"""Logging in and out, user accounts and people's tokens (sessions and API tokens)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from stalwart_master.api import audit
from stalwart_master.api.deps import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    AdminCaller,
    CurrentUser,
    Public,
    SessionDep,
    SettingsDep,
    UserCaller,
    client_address,
    csrf_token,
)
from stalwart_master.db.orm import Token
from stalwart_master.errors import Unauthorized
from stalwart_master.schemas.common import Text, problem_responses
from stalwart_master.schemas.users import LoginRequest, LoginResponse, UserCreate, UserOut
from stalwart_master.services import users as users_service
from stalwart_master.services.login_throttle import LoginThrottle

public = APIRouter(prefix="/api/v1", tags=["auth"])
router = APIRouter(prefix="/api/v1", tags=["auth"], responses=problem_responses(401))
Username = Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,128}$")]
TokenId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _throttle(request: Request, settings: SettingsDep) -> LoginThrottle:
    throttle: LoginThrottle | None = getattr(request.app.state, "login_throttle", None)
    if throttle is None:
        throttle = request.app.state.login_throttle = LoginThrottle(
            max_failures_per_user=settings.login.max_failures_per_user,
            max_failures_per_address=settings.login.max_failures_per_address,
            window_seconds=settings.login.window_seconds,
        )
    return throttle


@public.post("/auth/login", response_model=LoginResponse, responses=problem_responses(401, 422, 429))
def login(
    body: LoginRequest,
    _: Public,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
) -> LoginResponse:
    """429 with ``Retry-After`` after too many failures for the user name or the address; an
    unknown user name costs the same time as a wrong password. With ``cookie`` the session is set
    as the HttpOnly ``stalwart_session`` cookie beside a ``stalwart_csrf`` one, and ``token`` is
    null: requests the cookie authenticates, other than GET, HEAD and OPTIONS, must send that
    CSRF value as ``X-CSRF-Token``."""
    address = client_address(request)
    throttle = _throttle(request, settings)
    try:
        throttle.check(body.username, address)
        issued = users_service.login(session, body.username, body.password, settings.auth.token_ttl_hours)
    except Exception as exc:
        if isinstance(exc, Unauthorized):
            throttle.failed(body.username, address)
        session.rollback()
        audit.record_apart(
            request.app.state.sessions,
            caller=None,
            action="auth.login",
            target_type="user",
            target_id=body.username[:128],
            outcome="refused",
            username=body.username[:128],
            address=address,
            details={"reason": type(exc).__name__},
        )
        raise
    throttle.succeeded(body.username)
    audit.record(
        session,
        None,
        "auth.login",
        "user",
        issued.user.username,
        username=issued.user.username,
        address=address,
    )
    session.commit()
    response.headers["Cache-Control"] = "no-store"
    user = UserOut.model_validate(issued.user)
    if body.cookie:
        _set_session_cookies(request, response, issued.secret, settings.auth.token_ttl_hours * 3600)
        return LoginResponse(token=None, user=user)
    return LoginResponse(token=issued.secret, user=user)


def _set_session_cookies(request: Request, response: Response, secret: str, max_age: int) -> None:
    """The session where the page's scripts cannot read it (HttpOnly), and its CSRF value where
    they can; SameSite=Strict keeps other sites' pages from sending either."""
    secure = request.url.scheme == "https"
    response.set_cookie(
        SESSION_COOKIE, secret, max_age=max_age, path="/", secure=secure, httponly=True, samesite="strict"
    )
    response.set_cookie(
        CSRF_COOKIE, csrf_token(secret), max_age=max_age, path="/", secure=secure, samesite="strict"
    )


def _clear_session_cookies(request: Request, response: Response) -> None:
    secure = request.url.scheme == "https"
    response.delete_cookie(SESSION_COOKIE, path="/", secure=secure, httponly=True, samesite="strict")
    response.delete_cookie(CSRF_COOKIE, path="/", secure=secure, samesite="strict")


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(caller: UserCaller, request: Request, response: Response, session: SessionDep) -> None:
    """Revokes the session (or token) that calls it and clears the browser's session cookies."""
    users_service.revoke_token(session, caller.token.id)
    session.commit()
    _clear_session_cookies(request, response)


@router.get("/me", response_model=UserOut)
def me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user)


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    old_password: Text = Field(min_length=1, max_length=1024)
    new_password: Text = Field(min_length=8, max_length=1024)


@router.post("/me/password", status_code=204, responses=problem_responses(403, 422))
def change_password(body: PasswordChange, caller: UserCaller, session: SessionDep) -> Response:
    """Your other sessions and API tokens are revoked; this one stays."""
    users_service.change_own_password(
        session, caller.user, body.old_password, body.new_password, caller.token.id
    )
    audit.record(session, caller, "user.password.change", "user", caller.user.username)
    session.commit()
    return Response(status_code=204)


@router.get("/users", response_model=list[UserOut])
def list_users(_: CurrentUser, session: SessionDep) -> list[UserOut]:
    return [UserOut.model_validate(u) for u in users_service.list_users(session)]


@router.post(
    "/users",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(403, 409, 422),
)
def create_user(body: UserCreate, caller: AdminCaller, session: SessionDep) -> UserOut:
    created = users_service.create_user(session, body.username, body.password, admin=body.admin)
    audit.record(session, caller, "user.create", "user", created.username, {"admin": body.admin})
    session.commit()
    return UserOut.model_validate(created)


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    active: bool | None = None
    admin: bool | None = None
    password: Text | None = Field(default=None, min_length=8, max_length=1024, description="Reset it")


@router.patch("/users/{username}", response_model=UserOut, responses=problem_responses(403, 404, 409, 422))
def patch_user(username: Username, body: UserPatch, caller: AdminCaller, session: SessionDep) -> UserOut:
    """Deactivate (every session and API token dies), promote, demote, or reset the password."""
    user = users_service.get_user(session, username)
    users_service.update_user(session, user, active=body.active, admin=body.admin, password=body.password)
    changes = body.model_dump(exclude_none=True)
    if "password" in changes:
        changes["password"] = "reset"
    audit.record(session, caller, "user.update", "user", username, changes)
    session.commit()
    return UserOut.model_validate(user)


# --- people's tokens --------------------------------------------------------------------------


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: Text = Field(default="", max_length=256)
    expires_in_days: float | None = Field(default=None, gt=0, le=3650, description="None: never expires")


class TokenOut(BaseModel):
    id: int
    kind: str
    username: str
    description: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    current: bool = False


class TokenCreated(TokenOut):
    token: str = Field(description="The secret; shown this once only")


def _token_out(token: Token, current_id: int | None = None) -> TokenOut:
    return TokenOut(
        id=token.id,
        kind="session" if token.kind == "user" else "api",
        username=token.user.username,
        description=token.description,
        created_at=token.created_at,
        expires_at=token.expires_at,
        last_used_at=token.last_used_at,
        current=token.id == current_id,
    )


@router.post("/tokens", response_model=TokenCreated, status_code=201, responses=problem_responses(422))
def create_token(body: TokenCreate, caller: UserCaller, session: SessionDep) -> TokenCreated:
    """An API token for scripts: it acts as you, and revoking it (or a password change) ends it."""
    secret, token = users_service.create_api_token(
        session, caller.user, body.description, body.expires_in_days
    )
    session.refresh(token)
    audit.record(session, caller, "token.create", "token", token.id, {"description": body.description})
    session.commit()
    return TokenCreated(**_token_out(token).model_dump(), token=secret)


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(caller: UserCaller, session: SessionDep, all_users: bool = False) -> list[TokenOut]:
    """Your live sessions and API tokens; a cluster admin may ask for everyone's (``all_users``)."""
    user = None if all_users and caller.user.admin else caller.user
    return [_token_out(t, caller.token.id) for t in users_service.list_tokens(session, user)]


@router.delete("/tokens/{token_id}", status_code=204, responses=problem_responses(404))
def revoke_token(token_id: TokenId, caller: UserCaller, session: SessionDep) -> Response:
    token = users_service.revoke_users_token(session, caller.user, token_id)
    audit.record(session, caller, "token.revoke", "token", token_id, {"owner": token.user.username})
    session.commit()
    return Response(status_code=204)
