"""Workspaces, their members and projects (Determined's names and shapes)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from stalwart_master.api import audit
from stalwart_master.api.deps import CurrentUser, SessionDep, UserCaller
from stalwart_master.db.orm import User, Workspace
from stalwart_master.schemas.common import Text, problem_responses
from stalwart_master.services import authz
from stalwart_master.services import users as users_service
from stalwart_master.services import workspaces as workspaces_service

router = APIRouter(prefix="/api/v1", tags=["workspaces"], responses=problem_responses(401, 403, 404))
WorkspaceId = Annotated[int, Path(ge=1, le=2**31 - 1)]
ProjectId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Username = Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,128}$")]
RoleName = Literal["viewer", "editor", "admin"]


class WorkspaceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(min_length=1, max_length=128)


class WorkspacePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text | None = Field(default=None, min_length=1, max_length=128)
    archived: bool | None = None


class WorkspaceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    archived: bool
    created_at: dt.datetime
    role: str | None = Field(default=None, description="Your role in it")


class MemberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: RoleName


class MemberOut(BaseModel):
    username: str
    role: str


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(min_length=1, max_length=128)
    description: Text = Field(default="", max_length=10_000)


class ProjectPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text | None = Field(default=None, min_length=1, max_length=128)
    description: Text | None = Field(default=None, max_length=10_000)
    archived: bool | None = None


class ProjectOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    workspace_id: int
    name: str
    description: str
    archived: bool
    created_at: dt.datetime


def _workspace_out(session: Session, user: User, workspace: Workspace) -> WorkspaceOut:
    out = WorkspaceOut.model_validate(workspace)
    role = authz.role_in(session, user, out.id)
    return out.model_copy(update={"role": role.label if role else None})


@router.get("/workspaces", response_model=list[WorkspaceOut])
def list_workspaces(user: CurrentUser, session: SessionDep) -> list[WorkspaceOut]:
    """The workspaces you have a role in (all of them for a cluster admin)."""
    return [_workspace_out(session, user, w) for w in workspaces_service.list_workspaces(session, user)]


@router.post(
    "/workspaces", response_model=WorkspaceOut, status_code=201, responses=problem_responses(409, 422)
)
def create_workspace(body: WorkspaceCreate, caller: UserCaller, session: SessionDep) -> WorkspaceOut:
    """You become its admin."""
    workspace = workspaces_service.create_workspace(session, caller.user, body.name)
    audit.record(session, caller, "workspace.create", "workspace", workspace.id, {"name": body.name})
    session.commit()
    return _workspace_out(session, caller.user, workspace)


@router.get("/workspaces/{workspace_id}", response_model=WorkspaceOut)
def get_workspace(workspace_id: WorkspaceId, user: CurrentUser, session: SessionDep) -> WorkspaceOut:
    return _workspace_out(session, user, workspaces_service.workspace_for(session, user, workspace_id))


@router.patch(
    "/workspaces/{workspace_id}", response_model=WorkspaceOut, responses=problem_responses(409, 422)
)
def patch_workspace(
    workspace_id: WorkspaceId, body: WorkspacePatch, caller: UserCaller, session: SessionDep
) -> WorkspaceOut:
    workspace = workspaces_service.update_workspace(
        session, caller.user, workspace_id, name=body.name, archived=body.archived
    )
    audit.record(
        session, caller, "workspace.update", "workspace", workspace_id, body.model_dump(exclude_none=True)
    )
    session.commit()
    return _workspace_out(session, caller.user, workspace)


@router.delete("/workspaces/{workspace_id}", status_code=204, responses=problem_responses(409))
def delete_workspace(workspace_id: WorkspaceId, caller: UserCaller, session: SessionDep) -> Response:
    """Only an empty workspace (409 otherwise): move or delete what is inside first."""
    workspace = workspaces_service.delete_workspace(session, caller.user, workspace_id)
    audit.record(session, caller, "workspace.delete", "workspace", workspace_id, {"name": workspace.name})
    session.commit()
    return Response(status_code=204)


@router.get("/workspaces/{workspace_id}/members", response_model=list[MemberOut])
def list_members(workspace_id: WorkspaceId, user: CurrentUser, session: SessionDep) -> list[MemberOut]:
    return [
        MemberOut(username=name, role=role)
        for name, role in workspaces_service.list_members(session, user, workspace_id)
    ]


@router.put("/workspaces/{workspace_id}/members/{username}", response_model=MemberOut)
def set_member(
    workspace_id: WorkspaceId, username: Username, body: MemberIn, caller: UserCaller, session: SessionDep
) -> MemberOut:
    """Give a user a role here (or change it); workspace admins and cluster admins only."""
    member = users_service.get_user(session, username)
    workspaces_service.set_member(session, caller.user, workspace_id, member, body.role)
    audit.record(
        session,
        caller,
        "workspace.member.set",
        "workspace",
        workspace_id,
        {"user": username, "role": body.role},
    )
    session.commit()
    return MemberOut(username=username, role=body.role)


@router.delete(
    "/workspaces/{workspace_id}/members/{username}", status_code=204, responses=problem_responses(409)
)
def remove_member(
    workspace_id: WorkspaceId, username: Username, caller: UserCaller, session: SessionDep
) -> Response:
    member = users_service.get_user(session, username)
    workspaces_service.remove_member(session, caller.user, workspace_id, member)
    audit.record(session, caller, "workspace.member.remove", "workspace", workspace_id, {"user": username})
    session.commit()
    return Response(status_code=204)


@router.get("/workspaces/{workspace_id}/projects", response_model=list[ProjectOut])
def list_projects(workspace_id: WorkspaceId, user: CurrentUser, session: SessionDep) -> list[ProjectOut]:
    return [
        ProjectOut.model_validate(p) for p in workspaces_service.list_projects(session, user, workspace_id)
    ]


@router.post(
    "/workspaces/{workspace_id}/projects",
    response_model=ProjectOut,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(409, 422),
)
def create_project(
    workspace_id: WorkspaceId, body: ProjectCreate, caller: UserCaller, session: SessionDep
) -> ProjectOut:
    project = workspaces_service.create_project(
        session, caller.user, workspace_id, body.name, body.description
    )
    audit.record(session, caller, "project.create", "project", project.id, {"name": body.name})
    session.commit()
    return ProjectOut.model_validate(project)


@router.get("/projects/{project_id}", response_model=ProjectOut)
def get_project(project_id: ProjectId, user: CurrentUser, session: SessionDep) -> ProjectOut:
    return ProjectOut.model_validate(workspaces_service.project_for(session, user, project_id))


@router.patch("/projects/{project_id}", response_model=ProjectOut, responses=problem_responses(409, 422))
def patch_project(
    project_id: ProjectId, body: ProjectPatch, caller: UserCaller, session: SessionDep
) -> ProjectOut:
    project = workspaces_service.update_project(
        session, caller.user, project_id, name=body.name, description=body.description, archived=body.archived
    )
    audit.record(session, caller, "project.update", "project", project_id, body.model_dump(exclude_none=True))
    session.commit()
    return ProjectOut.model_validate(project)


@router.delete("/projects/{project_id}", status_code=204, responses=problem_responses(409))
def delete_project(project_id: ProjectId, caller: UserCaller, session: SessionDep) -> Response:
    project = workspaces_service.delete_project(session, caller.user, project_id)
    audit.record(session, caller, "project.delete", "project", project_id, {"name": project.name})
    session.commit()
    return Response(status_code=204)
