"""Who may do what inside workspaces: one table of roles, checked by every user route.

A user's role in a workspace is viewer (reads), editor (also creates, and changes what they own)
or admin (changes everything inside, manages members). Cluster admins act as admin everywhere.
An object in a workspace the user has no role in answers 404, so its existence does not leak.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from stalwart_master.db.orm import (
    Checkpoint,
    Experiment,
    Model,
    Project,
    Trial,
    User,
    Workspace,
    WorkspaceMember,
)
from stalwart_master.errors import Forbidden, NotFound


class Role(IntEnum):
    """Ordered: each role can do everything the ones below it can."""

    VIEWER = 1
    EDITOR = 2
    ADMIN = 3

    @classmethod
    def parse(cls, name: str) -> Role:
        return cls[name.upper()]

    @property
    def label(self) -> str:
        return self.name.lower()


def role_in(session: Session, user: User, workspace_id: int) -> Role | None:
    if user.admin:
        return Role.ADMIN
    name = session.scalar(
        select(WorkspaceMember.role).where(
            WorkspaceMember.workspace_id == workspace_id, WorkspaceMember.user_id == user.id
        )
    )
    return Role.parse(name) if name else None


def readable_workspace_ids(session: Session, user: User) -> set[int] | None:
    """The workspaces ``user`` can see; None means all of them (a cluster admin)."""
    if user.admin:
        return None
    return set(
        session.scalars(select(WorkspaceMember.workspace_id).where(WorkspaceMember.user_id == user.id))
    )


def in_workspaces(
    query: Select[Any], project_column: Any, workspace_ids: set[int] | None, workspace_id: int | None
) -> Select[Any]:
    """Narrow a list to objects whose project lies in the given workspaces (None: no narrowing)."""
    if workspace_ids is None and workspace_id is None:
        return query
    projects = select(Project.id)
    if workspace_ids is not None:
        projects = projects.where(Project.workspace_id.in_(workspace_ids))
    if workspace_id is not None:
        projects = projects.where(Project.workspace_id == workspace_id)
    return query.where(project_column.in_(projects))


def require_role(session: Session, user: User, workspace_id: int, need: Role, what: str) -> Role:
    """404 when the user cannot see the workspace at all, 403 when they see it but need more."""
    role = role_in(session, user, workspace_id)
    if role is None:
        raise NotFound(f"{what} not found")
    if role < need:
        raise Forbidden(f"this needs the {need.label} role in the workspace of {what}; you are {role.label}")
    return role


def require_change(session: Session, user: User, workspace_id: int, owner_id: int | None, what: str) -> None:
    """Editors change what they own; workspace admins (and cluster admins) change anything inside."""
    role = require_role(session, user, workspace_id, Role.VIEWER, what)
    if role >= Role.ADMIN or (role >= Role.EDITOR and owner_id == user.id):
        return
    raise Forbidden(f"only its owner (as an editor) or a workspace admin may change {what}")


def get_workspace(session: Session, workspace_id: int) -> Workspace:
    workspace = session.get(Workspace, workspace_id)
    if workspace is None:
        raise NotFound(f"workspace {workspace_id} not found")
    return workspace


def get_project(session: Session, project_id: int) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        raise NotFound(f"project {project_id} not found")
    return project


def workspace_of_project(session: Session, project_id: int) -> int:
    return get_project(session, project_id).workspace_id


# --- objects, as a user reaches them --------------------------------------------------------


def experiment_for(session: Session, user: User, experiment_id: int, need: Role = Role.VIEWER) -> Experiment:
    experiment = session.get(Experiment, experiment_id)
    what = f"experiment {experiment_id}"
    if experiment is None:
        raise NotFound(f"{what} not found")
    require_role(session, user, workspace_of_project(session, experiment.project_id), need, what)
    return experiment


def experiment_to_change(session: Session, user: User, experiment_id: int) -> Experiment:
    experiment = experiment_for(session, user, experiment_id)
    require_change(
        session,
        user,
        workspace_of_project(session, experiment.project_id),
        experiment.owner_id,
        f"experiment {experiment_id}",
    )
    return experiment


def trial_for(session: Session, user: User, trial_id: int) -> Trial:
    trial = session.get(Trial, trial_id)
    if trial is None:
        raise NotFound(f"trial {trial_id} not found")
    try:
        experiment_for(session, user, trial.experiment_id)
    except NotFound:
        raise NotFound(f"trial {trial_id} not found") from None
    return trial


def checkpoint_workspace(session: Session, checkpoint: Checkpoint) -> tuple[int, Experiment]:
    trial = session.get(Trial, checkpoint.trial_id)
    assert trial is not None
    experiment = session.get(Experiment, trial.experiment_id)
    assert experiment is not None
    return workspace_of_project(session, experiment.project_id), experiment


def checkpoint_for(
    session: Session, user: User, checkpoint: Checkpoint, need: Role = Role.VIEWER
) -> Experiment:
    """The checkpoint's experiment, once ``user`` may reach the checkpoint with role ``need``."""
    workspace_id, experiment = checkpoint_workspace(session, checkpoint)
    require_role(session, user, workspace_id, need, f"checkpoint {checkpoint.uuid}")
    return experiment


def model_for(session: Session, user: User, model: Model, need: Role = Role.VIEWER) -> None:
    require_role(
        session, user, workspace_of_project(session, model.project_id), need, f"model {model.name!r}"
    )


def model_to_change(session: Session, user: User, model: Model) -> None:
    require_change(
        session, user, workspace_of_project(session, model.project_id), model.user_id, f"model {model.name!r}"
    )


def project_to_create_in(session: Session, user: User, project_id: int) -> Project:
    """Creating an experiment or model in a project needs the editor role in its workspace."""
    project = get_project(session, project_id)
    require_role(session, user, project.workspace_id, Role.EDITOR, f"project {project_id}")
    if project.archived:
        raise Forbidden(f"project {project.name!r} is archived")
    workspace = get_workspace(session, project.workspace_id)
    if workspace.archived:
        raise Forbidden(f"workspace {workspace.name!r} is archived")
    return project
