"""``stalwart project`` (alias ``p``): the projects of a workspace, which hold experiments and models.

List a project's experiments with ``stalwart experiment list --project ID``.
"""

from typing import Annotated

import typer

from stalwart.cli._errors import CliError
from stalwart.cli._shared import JsonOption, client, fmt_time, print_fields, print_json
from stalwart.cli.workspace import print_projects
from stalwart.client import Project

app = typer.Typer(help="Create and manage the projects of a workspace.", no_args_is_help=True)

ProjectId = Annotated[int, typer.Argument(min=1, help="Project id.", show_default=False)]
WorkspaceId = Annotated[int, typer.Argument(min=1, help="Workspace id.", show_default=False)]


def _summary(project: Project, as_json: bool, message: str) -> None:
    if as_json:
        print_json(project.raw)
    else:
        typer.echo(message)


@app.command("list")
def list_(ctx: typer.Context, workspace_id: WorkspaceId, as_json: JsonOption = False) -> None:
    """List a workspace's projects."""
    projects = client(ctx).list_projects(workspace_id)
    if as_json:
        print_json([p.raw for p in projects])
    else:
        print_projects(projects)


app.command("ls", hidden=True)(list_)


@app.command()
def create(
    ctx: typer.Context,
    workspace_id: WorkspaceId,
    name: Annotated[str, typer.Argument(help="Unique within the workspace.", show_default=False)],
    description: Annotated[str, typer.Option("--description", "-d", help="What it is for.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Create a project in a workspace (editors); prints its id."""
    project = client(ctx).create_project(workspace_id, name, description)
    _summary(project, as_json, f"Created project {project.id} ({project.name!r}) in workspace {workspace_id}")


@app.command()
def describe(ctx: typer.Context, project_id: ProjectId, as_json: JsonOption = False) -> None:
    """Show one project."""
    project = client(ctx).get_project(project_id)
    if as_json:
        print_json(project.raw)
        return
    print_fields(
        {
            "ID": project.id,
            "Workspace": project.workspace_id,
            "Name": project.name,
            "Description": project.description,
            "Archived": "yes" if project.archived else "no",
            "Created": fmt_time(project.created_at),
        }
    )


@app.command()
def edit(
    ctx: typer.Context,
    project_id: ProjectId,
    name: Annotated[str | None, typer.Option("--name", help="Rename it.", show_default=False)] = None,
    description: Annotated[
        str | None, typer.Option("--description", "-d", help="Replace the description.", show_default=False)
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Rename a project or replace its description."""
    if name is None and description is None:
        raise CliError("nothing to change: give --name and/or --description")
    project = client(ctx).update_project(project_id, name=name, description=description)
    _summary(project, as_json, f"Project {project.id} updated ({project.name!r})")


@app.command()
def archive(ctx: typer.Context, project_id: ProjectId, as_json: JsonOption = False) -> None:
    """Archive a project: nothing new can be created in it."""
    project = client(ctx).update_project(project_id, archived=True)
    _summary(project, as_json, f"Project {project.id} is archived")


@app.command()
def unarchive(ctx: typer.Context, project_id: ProjectId, as_json: JsonOption = False) -> None:
    """Undo archive."""
    project = client(ctx).update_project(project_id, archived=False)
    _summary(project, as_json, f"Project {project.id} is no longer archived")


@app.command()
def delete(
    ctx: typer.Context,
    project_id: ProjectId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete an empty project (move or delete its experiments and models first)."""
    if not yes:
        typer.confirm(f"Delete project {project_id}?", abort=True)
    client(ctx).delete_project(project_id)
    typer.echo(f"Deleted project {project_id}")
