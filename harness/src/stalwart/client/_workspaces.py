"""``Client`` methods: workspaces, projects and their members."""

from __future__ import annotations

from typing import Literal

from stalwart.client._base import ClientBase, _segment
from stalwart.client.models import (
    Experiment,
    Project,
    Workspace,
    WorkspaceMember,
)


class Workspaces(ClientBase):
    """Workspaces, projects and their members."""

    # --- workspaces and projects --------------------------------------------------------------

    def list_workspaces(self) -> list[Workspace]:
        """The workspaces you have a role in (every one for a cluster admin), with your role.

        Example::

            names = {w.id: w.name for w in Client().list_workspaces()}
        """
        return [Workspace.from_json(item) for item in self._json("GET", "/api/v1/workspaces")]

    def create_workspace(self, name: str) -> Workspace:
        """A new workspace with you as its admin; ``ConflictError`` if the name is taken.

        Example::

            ws = Client().create_workspace("vision")
        """
        return Workspace.from_json(self._json("POST", "/api/v1/workspaces", json={"name": name}))

    def get_workspace(self, workspace_id: int) -> Workspace:
        """One workspace; ``NotFoundError`` also when you have no role in it.

        Example::

            print(Client().get_workspace(2).role)
        """
        return Workspace.from_json(self._json("GET", f"/api/v1/workspaces/{int(workspace_id)}"))

    def update_workspace(
        self, workspace_id: int, *, name: str | None = None, archived: bool | None = None
    ) -> Workspace:
        """Rename, archive or unarchive (workspace admins); None leaves a field as it is.

        Example::

            Client().update_workspace(2, archived=True)
        """
        body = {key: value for key, value in (("name", name), ("archived", archived)) if value is not None}
        return Workspace.from_json(self._json("PATCH", f"/api/v1/workspaces/{int(workspace_id)}", json=body))

    def delete_workspace(self, workspace_id: int) -> None:
        """Delete an empty workspace and its projects; ``ConflictError`` while it holds experiments
        or models (move or delete them first).

        Example::

            Client().delete_workspace(2)
        """
        self._session.request("DELETE", f"/api/v1/workspaces/{int(workspace_id)}")

    def list_workspace_members(self, workspace_id: int) -> list[WorkspaceMember]:
        """Who has which role in the workspace, by user name.

        Example::

            roles = {m.username: m.role for m in Client().list_workspace_members(2)}
        """
        data = self._json("GET", f"/api/v1/workspaces/{int(workspace_id)}/members")
        return [WorkspaceMember.from_json(item) for item in data]

    def set_workspace_member(
        self, workspace_id: int, username: str, role: Literal["viewer", "editor", "admin"]
    ) -> WorkspaceMember:
        """Give ``username`` a role in the workspace, or change it (workspace admins).

        ``viewer`` reads, ``editor`` also creates and changes what it owns, ``admin`` changes
        everything inside and manages members.

        Example::

            Client().set_workspace_member(2, "alice", "editor")
        """
        path = f"/api/v1/workspaces/{int(workspace_id)}/members/{_segment(username)}"
        return WorkspaceMember.from_json(self._json("PUT", path, json={"role": role}))

    def remove_workspace_member(self, workspace_id: int, username: str) -> None:
        """Take away ``username``'s role in the workspace (a no-op if it had none).

        Example::

            Client().remove_workspace_member(2, "alice")
        """
        self._session.request(
            "DELETE", f"/api/v1/workspaces/{int(workspace_id)}/members/{_segment(username)}"
        )

    def list_projects(self, workspace_id: int) -> list[Project]:
        """The workspace's projects.

        Example::

            ids = [p.id for p in Client().list_projects(2)]
        """
        data = self._json("GET", f"/api/v1/workspaces/{int(workspace_id)}/projects")
        return [Project.from_json(item) for item in data]

    def create_project(self, workspace_id: int, name: str, description: str = "") -> Project:
        """A new project in the workspace (editors); names are unique within a workspace.

        Example::

            project = Client().create_project(2, "resnet", "ImageNet runs")
        """
        body = {"name": name, "description": description}
        return Project.from_json(
            self._json("POST", f"/api/v1/workspaces/{int(workspace_id)}/projects", json=body)
        )

    def get_project(self, project_id: int) -> Project:
        """One project.

        Example::

            print(Client().get_project(3).workspace_id)
        """
        return Project.from_json(self._json("GET", f"/api/v1/projects/{int(project_id)}"))

    def update_project(
        self,
        project_id: int,
        *,
        name: str | None = None,
        description: str | None = None,
        archived: bool | None = None,
    ) -> Project:
        """Rename, describe, archive or unarchive; None leaves a field as it is.

        Example::

            Client().update_project(3, description="ImageNet-21k runs")
        """
        body = {
            key: value
            for key, value in (("name", name), ("description", description), ("archived", archived))
            if value is not None
        }
        return Project.from_json(self._json("PATCH", f"/api/v1/projects/{int(project_id)}", json=body))

    def delete_project(self, project_id: int) -> None:
        """Delete an empty project; ``ConflictError`` while it holds experiments or models.

        Example::

            Client().delete_project(3)
        """
        self._session.request("DELETE", f"/api/v1/projects/{int(project_id)}")

    def move_experiment(self, experiment_id: int, project_id: int) -> Experiment:
        """Move an experiment into another project, and so under that workspace's roles.

        Needs change rights on the experiment and the editor role in the destination.

        Example::

            Client().move_experiment(7, project_id=3).project_id  # 3
        """
        body = {"project_id": project_id}
        return Experiment.from_json(
            self._json("POST", f"/api/v1/experiments/{int(experiment_id)}/move", json=body)
        )
