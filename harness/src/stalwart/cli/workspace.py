"""``stalwart workspace`` (alias ``w``): workspaces, their members' roles and their projects.

Verbs follow ``det workspace``; ``assign-role``/``unassign-role`` are ``det rbac``'s, scoped to one
workspace.
"""

from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated

import typer

from stalwart.cli._errors import CliError
from stalwart.cli._shared import JsonOption, client, fmt_time, print_fields, print_json, print_table
from stalwart.client import Project, Workspace

app = typer.Typer(help="Create workspaces, manage who has which role in them.", no_args_is_help=True)

WorkspaceId = Annotated[int, typer.Argument(min=1, help="Workspace id.", show_default=False)]
Username = Annotated[str, typer.Argument(help="User name.", show_default=False)]


class Role(StrEnum):
    viewer = "viewer"
    editor = "editor"
    admin = "admin"


def _summary(workspace: Workspace, as_json: bool, message: str) -> None:
    if as_json:
        print_json(workspace.raw)
    else:
        typer.echo(message)


def print_projects(projects: Iterable[Project]) -> None:
    print_table(
        ["ID", "Workspace", "Name", "Archived", "Created", "Description"],
        (
            [
                p.id,
                p.workspace_id,
                p.name,
                "yes" if p.archived else "",
                fmt_time(p.created_at),
                p.description,
            ]
            for p in projects
        ),
    )


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the workspaces you have a role in (every one for a cluster admin)."""
    workspaces = client(ctx).list_workspaces()
    if as_json:
        print_json([w.raw for w in workspaces])
        return
    print_table(
        ["ID", "Name", "Your role", "Archived", "Created"],
        (
            [w.id, w.name, w.role or "", "yes" if w.archived else "", fmt_time(w.created_at)]
            for w in workspaces
        ),
    )


app.command("ls", hidden=True)(list_)


@app.command()
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Unique workspace name.", show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """Create a workspace; you become its admin."""
    workspace = client(ctx).create_workspace(name)
    _summary(workspace, as_json, f"Created workspace {workspace.id} ({workspace.name!r})")


@app.command()
def describe(ctx: typer.Context, workspace_id: WorkspaceId, as_json: JsonOption = False) -> None:
    """Show one workspace and its projects."""
    c = client(ctx)
    workspace = c.get_workspace(workspace_id)
    projects = c.list_projects(workspace_id)
    if as_json:
        print_json({**workspace.raw, "projects": [p.raw for p in projects]})
        return
    print_fields(
        {
            "ID": workspace.id,
            "Name": workspace.name,
            "Your role": workspace.role,
            "Archived": "yes" if workspace.archived else "no",
            "Created": fmt_time(workspace.created_at),
        }
    )
    if projects:
        typer.echo()
        print_projects(projects)


@app.command()
def edit(
    ctx: typer.Context,
    workspace_id: WorkspaceId,
    name: Annotated[str | None, typer.Option("--name", help="Rename it.", show_default=False)] = None,
    as_json: JsonOption = False,
) -> None:
    """Change a workspace (workspace admins)."""
    if name is None:
        raise CliError("nothing to change: give --name")
    workspace = client(ctx).update_workspace(workspace_id, name=name)
    _summary(workspace, as_json, f"Workspace {workspace.id} is now named {workspace.name!r}")


@app.command()
def archive(ctx: typer.Context, workspace_id: WorkspaceId, as_json: JsonOption = False) -> None:
    """Archive a workspace: nothing new can be created in it."""
    workspace = client(ctx).update_workspace(workspace_id, archived=True)
    _summary(workspace, as_json, f"Workspace {workspace.id} is archived")


@app.command()
def unarchive(ctx: typer.Context, workspace_id: WorkspaceId, as_json: JsonOption = False) -> None:
    """Undo archive."""
    workspace = client(ctx).update_workspace(workspace_id, archived=False)
    _summary(workspace, as_json, f"Workspace {workspace.id} is no longer archived")


@app.command()
def delete(
    ctx: typer.Context,
    workspace_id: WorkspaceId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete an empty workspace and its projects (move or delete experiments and models first)."""
    if not yes:
        typer.confirm(f"Delete workspace {workspace_id} and its projects?", abort=True)
    client(ctx).delete_workspace(workspace_id)
    typer.echo(f"Deleted workspace {workspace_id}")


@app.command("list-projects")
def list_projects(ctx: typer.Context, workspace_id: WorkspaceId, as_json: JsonOption = False) -> None:
    """List the workspace's projects (the same as `project list`)."""
    projects = client(ctx).list_projects(workspace_id)
    if as_json:
        print_json([p.raw for p in projects])
    else:
        print_projects(projects)


@app.command("list-members")
def list_members(ctx: typer.Context, workspace_id: WorkspaceId, as_json: JsonOption = False) -> None:
    """List who has which role in the workspace."""
    members = client(ctx).list_workspace_members(workspace_id)
    if as_json:
        print_json([m.raw for m in members])
        return
    print_table(["User", "Role"], ([m.username, m.role] for m in members))


app.command("members", hidden=True)(list_members)


@app.command("assign-role")
def assign_role(
    ctx: typer.Context,
    workspace_id: WorkspaceId,
    username: Username,
    role: Annotated[
        Role,
        typer.Argument(
            help="viewer reads; editor also creates; admin changes everything and manages members.",
            show_default=False,
        ),
    ],
    as_json: JsonOption = False,
) -> None:
    """Give a user a role in the workspace, or change it (workspace admins)."""
    member = client(ctx).set_workspace_member(workspace_id, username, role.value)
    if as_json:
        print_json(member.raw)
    else:
        typer.echo(f"{member.username} is now {member.role} in workspace {workspace_id}")


@app.command("unassign-role")
def unassign_role(ctx: typer.Context, workspace_id: WorkspaceId, username: Username) -> None:
    """Take away a user's role in the workspace (workspace admins)."""
    client(ctx).remove_workspace_member(workspace_id, username)
    typer.echo(f"{username} has no role in workspace {workspace_id} now")
