"""Workspaces, their projects and members; the rules of who may do what live in ``authz``."""

from __future__ import annotations

import logging

from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session

from stalwart_master.db.orm import (
    DEFAULT_PROJECT_ID,
    DEFAULT_WORKSPACE_ID,
    Experiment,
    Model,
    Project,
    User,
    Workspace,
    WorkspaceMember,
)
from stalwart_master.errors import Conflict, ErrorList, Forbidden
from stalwart_master.services import authz
from stalwart_master.services.authz import Role

log = logging.getLogger(__name__)


def _check_name(name: str, what: str) -> None:
    errors = ErrorList()
    if not name.strip() or len(name) > 128 or any(ord(c) < 32 or c == "\x7f" for c in name):
        errors.add("name", f"a {what} name must be 1-128 printable characters, not blank")
    errors.raise_if_any(title=f"Invalid {what}")


def create_workspace(session: Session, actor: User, name: str) -> Workspace:
    """Any user may make one; they become its admin."""
    _check_name(name, "workspace")
    if session.scalar(select(Workspace.id).where(Workspace.name == name)) is not None:
        raise Conflict(f"workspace {name!r} already exists")
    workspace = Workspace(name=name, user_id=actor.id)
    session.add(workspace)
    session.flush()
    session.add(WorkspaceMember(workspace_id=workspace.id, user_id=actor.id, role="admin"))
    session.flush()
    log.info("workspace %s (%r) created by %s", workspace.id, name, actor.username)
    return workspace


def list_workspaces(session: Session, actor: User) -> list[Workspace]:
    query = select(Workspace).order_by(Workspace.id)
    visible = authz.readable_workspace_ids(session, actor)
    if visible is not None:
        query = query.where(Workspace.id.in_(visible))
    return list(session.scalars(query))


def workspace_for(session: Session, actor: User, workspace_id: int, need: Role = Role.VIEWER) -> Workspace:
    workspace = authz.get_workspace(session, workspace_id)
    authz.require_role(session, actor, workspace_id, need, f"workspace {workspace_id}")
    return workspace


def update_workspace(
    session: Session, actor: User, workspace_id: int, *, name: str | None, archived: bool | None
) -> Workspace:
    workspace = workspace_for(session, actor, workspace_id, Role.ADMIN)
    if name is not None and name != workspace.name:
        _check_name(name, "workspace")
        if session.scalar(select(Workspace.id).where(Workspace.name == name)) is not None:
            raise Conflict(f"workspace {name!r} already exists")
        workspace.name = name
    if archived is not None:
        if workspace.id == DEFAULT_WORKSPACE_ID and archived:
            raise Conflict("the default workspace cannot be archived")
        workspace.archived = archived
    session.flush()
    return workspace


def delete_workspace(session: Session, actor: User, workspace_id: int) -> Workspace:
    """Only an empty one: experiments and models are moved or deleted first, never lost with it."""
    workspace = workspace_for(session, actor, workspace_id, Role.ADMIN)
    if workspace.id == DEFAULT_WORKSPACE_ID:
        raise Conflict("the default workspace cannot be deleted")
    used = _objects_in(session, select(Project.id).where(Project.workspace_id == workspace_id))
    if used:
        raise Conflict(f"workspace {workspace.name!r} still holds {used} experiments or models")
    session.execute(delete(Project).where(Project.workspace_id == workspace_id))
    session.delete(workspace)
    session.flush()
    return workspace


def _objects_in(session: Session, projects: Select[int]) -> int:
    """Experiments and models inside the projects: a non-empty place is never deleted with them."""
    experiments = select(func.count(Experiment.id)).where(Experiment.project_id.in_(projects))
    models = select(func.count(Model.id)).where(Model.project_id.in_(projects))
    return (session.scalar(experiments) or 0) + (session.scalar(models) or 0)


def list_members(session: Session, actor: User, workspace_id: int) -> list[tuple[str, str]]:
    workspace_for(session, actor, workspace_id)
    rows = session.execute(
        select(User.username, WorkspaceMember.role)
        .join(User, User.id == WorkspaceMember.user_id)
        .where(WorkspaceMember.workspace_id == workspace_id)
        .order_by(User.username)
    )
    return [(username, role) for username, role in rows]


def set_member(session: Session, actor: User, workspace_id: int, member: User, role: str) -> None:
    workspace_for(session, actor, workspace_id, Role.ADMIN)
    existing = session.get(WorkspaceMember, (workspace_id, member.id))
    if existing is not None and existing.role == "admin" and role != "admin":
        _keep_an_admin(session, workspace_id, member)
    if existing is None:
        session.add(WorkspaceMember(workspace_id=workspace_id, user_id=member.id, role=role))
    else:
        existing.role = role
    session.flush()


def remove_member(session: Session, actor: User, workspace_id: int, member: User) -> None:
    workspace_for(session, actor, workspace_id, Role.ADMIN)
    existing = session.get(WorkspaceMember, (workspace_id, member.id))
    if existing is None:
        return
    if existing.role == "admin":
        _keep_an_admin(session, workspace_id, member)
    session.delete(existing)
    session.flush()


def _keep_an_admin(session: Session, workspace_id: int, leaving: User) -> None:
    """A workspace without an admin could only be managed by cluster admins; refuse to make one."""
    others = session.scalar(
        select(func.count())
        .select_from(WorkspaceMember)
        .where(
            WorkspaceMember.workspace_id == workspace_id,
            WorkspaceMember.role == "admin",
            WorkspaceMember.user_id != leaving.id,
        )
    )
    if not others and workspace_id != DEFAULT_WORKSPACE_ID:
        raise Conflict(f"{leaving.username!r} is the workspace's last admin")


# --- projects ---------------------------------------------------------------------------------


def create_project(session: Session, actor: User, workspace_id: int, name: str, description: str) -> Project:
    workspace = workspace_for(session, actor, workspace_id, Role.EDITOR)
    if workspace.archived:
        raise Forbidden(f"workspace {workspace.name!r} is archived")
    _check_name(name, "project")
    exists = session.scalar(
        select(Project.id).where(Project.workspace_id == workspace_id, Project.name == name)
    )
    if exists is not None:
        raise Conflict(f"project {name!r} already exists in workspace {workspace.name!r}")
    project = Project(workspace_id=workspace_id, name=name, description=description, user_id=actor.id)
    session.add(project)
    session.flush()
    return project


def list_projects(session: Session, actor: User, workspace_id: int) -> list[Project]:
    workspace_for(session, actor, workspace_id)
    return list(
        session.scalars(select(Project).where(Project.workspace_id == workspace_id).order_by(Project.id))
    )


def project_for(session: Session, actor: User, project_id: int) -> Project:
    project = authz.get_project(session, project_id)
    authz.require_role(session, actor, project.workspace_id, Role.VIEWER, f"project {project_id}")
    return project


def update_project(
    session: Session,
    actor: User,
    project_id: int,
    *,
    name: str | None,
    description: str | None,
    archived: bool | None,
) -> Project:
    project = project_for(session, actor, project_id)
    authz.require_change(session, actor, project.workspace_id, project.user_id, f"project {project_id}")
    if name is not None and name != project.name:
        _check_name(name, "project")
        taken = session.scalar(
            select(Project.id).where(Project.workspace_id == project.workspace_id, Project.name == name)
        )
        if taken is not None:
            raise Conflict(f"project {name!r} already exists in this workspace")
        project.name = name
    if description is not None:
        project.description = description
    if archived is not None:
        if project.id == DEFAULT_PROJECT_ID and archived:
            raise Conflict("the default project cannot be archived")
        project.archived = archived
    session.flush()
    return project


def delete_project(session: Session, actor: User, project_id: int) -> Project:
    project = project_for(session, actor, project_id)
    authz.require_change(session, actor, project.workspace_id, project.user_id, f"project {project_id}")
    if project.id == DEFAULT_PROJECT_ID:
        raise Conflict("the default project cannot be deleted")
    used = _objects_in(session, select(Project.id).where(Project.id == project_id))
    if used:
        raise Conflict(f"project {project.name!r} still holds {used} experiments or models")
    session.delete(project)
    session.flush()
    return project
