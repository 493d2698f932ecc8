from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from stalwart_master.schemas.common import Text


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    admin: bool
    active: bool
    created_at: dt.datetime


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Text = Field(min_length=1, max_length=128)
    password: Text = Field(min_length=1, max_length=1024)
    cookie: bool = Field(
        default=False,
        description="For the web UI: set the session as an HttpOnly cookie (with a CSRF cookie) "
        "and leave `token` null",
    )


class LoginResponse(BaseModel):
    token: str | None = Field(description="The session's secret; null when it was set as a cookie")
    user: UserOut


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(pattern=r"^[A-Za-z0-9._-]{1,128}$", description="letters, digits, '.', '_' or '-'")
    password: Text = Field(min_length=8, max_length=1024)
    admin: bool = False
