from __future__ import annotations

from fastapi import APIRouter, status

from stalwart_master.api.deps import AdminUser, CurrentUser, SessionDep, SettingsDep, TokenDep, require_token
from stalwart_master.schemas.common import problem_responses
from stalwart_master.schemas.users import LoginRequest, LoginResponse, UserCreate, UserOut
from stalwart_master.services import users as users_service

public = APIRouter(prefix="/api/v1", tags=["auth"])
router = APIRouter(
    prefix="/api/v1", tags=["auth"], dependencies=[require_token], responses=problem_responses(401)
)


@public.post("/auth/login", response_model=LoginResponse, responses=problem_responses(401, 422))
def login(body: LoginRequest, session: SessionDep, settings: SettingsDep) -> LoginResponse:
    issued = users_service.login(session, body.username, body.password, settings.auth.token_ttl_hours)
    session.commit()
    return LoginResponse(token=issued.secret, user=UserOut.model_validate(issued.user))


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(token: TokenDep, session: SessionDep) -> None:
    users_service.revoke_token(session, token.id)
    session.commit()


@router.get("/me", response_model=UserOut)
def me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user)


@router.get("/users", response_model=list[UserOut])
def list_users(session: SessionDep) -> list[UserOut]:
    return [UserOut.model_validate(u) for u in users_service.list_users(session)]


@router.post(
    "/users",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(403, 409, 422),
)
def create_user(body: UserCreate, _: AdminUser, session: SessionDep) -> UserOut:
    created = users_service.create_user(session, body.username, body.password, admin=body.admin)
    session.commit()
    return UserOut.model_validate(created)
