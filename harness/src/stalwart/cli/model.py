"""``stalwart model`` (alias ``m``): the model registry, named models and their checkpoint versions."""

import json
from collections.abc import Iterable
from typing import Annotated, Any

import typer

from stalwart.cli._errors import CliError
from stalwart.cli._shared import JsonOption, client, fmt_time, print_fields, print_json, print_table
from stalwart.client import Model, ModelVersion

app = typer.Typer(help="Register checkpoints as versions of named models.", no_args_is_help=True)

ModelName = Annotated[str, typer.Argument(metavar="NAME", help="Model name.", show_default=False)]
LabelsOption = Annotated[
    list[str] | None,
    typer.Option("--label", "-l", help="A label (repeatable).", show_default=False, metavar="LABEL"),
]
MetadataOption = Annotated[
    str | None,
    typer.Option("--metadata", help='A JSON object, e.g. \'{"dataset": "v2"}\'.', show_default=False),
]


def _metadata(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CliError(f"--metadata is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CliError(f"--metadata must be a JSON object, not {type(value).__name__}")
    return value


def _print_versions(versions: Iterable[ModelVersion], caption: str | None = None) -> None:
    print_table(
        ["Version", "Checkpoint", "Experiment", "Trial", "Comment", "Labels", "Owner", "Created"],
        (
            [
                v.version,
                v.checkpoint_uuid,
                v.experiment_id,
                v.trial_id,
                v.comment,
                ", ".join(v.labels),
                v.owner,
                fmt_time(v.created_at),
            ]
            for v in versions
        ),
        caption=caption,
    )


def _model_fields(model: Model) -> dict[str, Any]:
    return {
        "Name": model.name,
        "ID": model.id,
        "Description": model.description,
        "Labels": ", ".join(model.labels),
        "Metadata": json.dumps(dict(model.metadata), sort_keys=True),
        "Owner": model.owner,
        "Versions": model.num_versions,
        "Latest version": model.latest_version,
        "Created": fmt_time(model.created_at),
        "Updated": fmt_time(model.updated_at),
    }


@app.command()
def create(
    ctx: typer.Context,
    name: ModelName,
    description: Annotated[str, typer.Option("--description", "-d", help="What the model is.")] = "",
    labels: LabelsOption = None,
    metadata: MetadataOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a model to the registry (names are unique)."""
    model = client(ctx).create_model(
        name, description=description, labels=labels or (), metadata=_metadata(metadata)
    )
    if as_json:
        print_json(model.raw)
    else:
        typer.echo(f"Created model {model.name!r}.")


@app.command("list")
def list_(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Option(help="Name contains this (any case).", show_default=False)
    ] = None,
    labels: Annotated[
        list[str] | None,
        typer.Option(
            "--label",
            help="Only with this label (repeatable; all must match).",
            show_default=False,
            metavar="LABEL",
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, max=1000, help="At most this many.")] = None,
    offset: Annotated[int | None, typer.Option(min=0, help="Skip this many.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List models by name."""
    page = client(ctx).list_models(name=name, labels=labels, limit=limit, offset=offset)
    if as_json:
        print_json(page.raw)
        return
    shown = len(page.items)
    caption = f"{shown} of {page.total} shown (use --offset/--limit)" if shown < page.total else None
    print_table(
        ["Name", "Versions", "Latest", "Labels", "Owner", "Updated", "Description"],
        (
            [
                m.name,
                m.num_versions,
                m.latest_version,
                ", ".join(m.labels),
                m.owner,
                fmt_time(m.updated_at),
                m.description,
            ]
            for m in page.items
        ),
        caption=caption,
    )


app.command("ls", hidden=True)(list_)


@app.command()
def describe(ctx: typer.Context, name: ModelName, as_json: JsonOption = False) -> None:
    """Show one model and its versions."""
    c = client(ctx)
    model = c.get_model(name)
    versions = c.list_model_versions(name, limit=1000)
    if as_json:
        print_json({**model.raw, "versions": [v.raw for v in versions.items]})
        return
    print_fields(_model_fields(model))
    if versions.items:
        typer.echo()
        shown = len(versions.items)
        caption = f"{shown} of {versions.total} shown" if shown < versions.total else None
        _print_versions(versions.items, caption)


@app.command("register-version")
def register_version(
    ctx: typer.Context,
    name: ModelName,
    checkpoint_uuid: Annotated[
        str, typer.Argument(metavar="UUID", help="A COMPLETED checkpoint.", show_default=False)
    ],
    comment: Annotated[str, typer.Option("--comment", "-c", help="Why this version.")] = "",
    labels: LabelsOption = None,
    metadata: MetadataOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a checkpoint as the model's next version; it is then kept from GC and deletion."""
    version = client(ctx).register_model_version(
        name, checkpoint_uuid, comment=comment, labels=labels or (), metadata=_metadata(metadata)
    )
    if as_json:
        print_json(version.raw)
    else:
        typer.echo(f"Registered checkpoint {version.checkpoint_uuid} as {version.model}:{version.version}.")


@app.command("list-versions")
def list_versions(
    ctx: typer.Context,
    name: ModelName,
    limit: Annotated[int | None, typer.Option(min=1, max=1000, help="At most this many.")] = None,
    offset: Annotated[int | None, typer.Option(min=0, help="Skip this many.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List a model's versions, oldest first."""
    page = client(ctx).list_model_versions(name, limit=limit, offset=offset)
    if as_json:
        print_json(page.raw)
        return
    shown = len(page.items)
    caption = f"{shown} of {page.total} shown (use --offset/--limit)" if shown < page.total else None
    _print_versions(page.items, caption)


@app.command()
def delete(
    ctx: typer.Context,
    name: ModelName,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a model with all its versions; their checkpoints are no longer kept for it."""
    if not yes:
        typer.confirm(f"Delete model {name!r} and all its versions?", abort=True)
    client(ctx).delete_model(name)
    typer.echo(f"Deleted model {name!r}")


@app.command("delete-version")
def delete_version(
    ctx: typer.Context,
    name: ModelName,
    version: Annotated[int, typer.Argument(min=1, help="Version number.", show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete one version of a model; its checkpoint is no longer kept for it."""
    if not yes:
        typer.confirm(f"Delete version {version} of model {name!r}?", abort=True)
    client(ctx).delete_model_version(name, version)
    typer.echo(f"Deleted {name}:{version}")
