"""``stalwart checkpoint`` (alias ``c``): the checkpoints trials registered."""

import enum
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from stalwart._masking import mask_config
from stalwart.cli._errors import CliError
from stalwart.cli._shared import (
    JsonOption,
    client,
    fmt_size,
    fmt_time,
    print_fields,
    print_masked_json,
    print_table,
)

app = typer.Typer(help="List and inspect checkpoints.", no_args_is_help=True)


class DownloadFormat(enum.StrEnum):
    files = "files"
    safetensors = "safetensors"


@app.command("list")
def list_(
    ctx: typer.Context,
    experiment_id: Annotated[int, typer.Argument(min=1, help="Experiment id.", show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """List the checkpoints of an experiment's trials, oldest first."""
    checkpoints = client(ctx).list_checkpoints(experiment_id)
    if as_json:
        print_masked_json([ckpt.raw for ckpt in checkpoints])
        return
    print_table(
        ["UUID", "Trial", "Steps", "State", "Size", "Files", "Created"],
        (
            [
                ckpt.uuid,
                ckpt.trial_id,
                ckpt.steps_completed,
                ckpt.state,
                fmt_size(ckpt.size),
                len(ckpt.files),
                fmt_time(ckpt.created_at),
            ]
            for ckpt in checkpoints
        ),
    )


app.command("ls", hidden=True)(list_)


@app.command()
def describe(
    ctx: typer.Context,
    checkpoint_uuid: Annotated[
        str, typer.Argument(metavar="UUID", help="Checkpoint UUID.", show_default=False)
    ],
    as_json: JsonOption = False,
) -> None:
    """Show one checkpoint with its files (size and SHA-256 of each)."""
    ckpt = client(ctx).get_checkpoint(checkpoint_uuid)
    if as_json:
        print_masked_json(ckpt.raw)
        return
    print_fields(
        {
            "UUID": ckpt.uuid,
            "Trial": ckpt.trial_id,
            "Steps": ckpt.steps_completed,
            "State": ckpt.state,
            "Size": fmt_size(ckpt.size),
            "Stored": "" if ckpt.stored_size is None else fmt_size(ckpt.stored_size),
            "Searcher metric": ckpt.searcher_metric,
            "Model versions": ", ".join(ckpt.model_versions),
            "Deleted": fmt_time(ckpt.deleted_at),
            "Parent": ckpt.parent_uuid,
            "Allocation": ckpt.allocation_id,
            "Storage": json.dumps(mask_config(dict(ckpt.storage)), sort_keys=True),
            "Metadata": json.dumps(dict(ckpt.metadata), sort_keys=True),
            "Created": fmt_time(ckpt.created_at),
        }
    )
    if ckpt.files:
        typer.echo()
        print_table(["File", "Size", "SHA-256"], ([f.path, fmt_size(f.size), f.sha256] for f in ckpt.files))


@app.command()
def lineage(
    ctx: typer.Context,
    checkpoint_uuid: Annotated[
        str, typer.Argument(metavar="UUID", help="Checkpoint UUID.", show_default=False)
    ],
    as_json: JsonOption = False,
) -> None:
    """Show where a checkpoint came from: its parent chain, then the experiments and trials involved."""
    found = client(ctx).checkpoint_lineage(checkpoint_uuid)
    if as_json:
        print_masked_json(found.raw)
        return
    experiment_of = {t.id: t.experiment_id for t in found.trials}
    chain = [found.checkpoint, *found.chain]
    rows = [
        [
            # A tree drawn down the first column: each row is the parent of the row above.
            ckpt.uuid if depth == 0 else f"{'  ' * (depth - 1)}└ {ckpt.uuid}",
            experiment_of.get(ckpt.trial_id, ""),
            ckpt.trial_id,
            ckpt.steps_completed,
            ckpt.state,
            fmt_time(ckpt.created_at),
        ]
        for depth, ckpt in enumerate(chain)
    ]
    if found.missing_parent:
        rows.append([f"{'  ' * (len(chain) - 1)}└ {found.missing_parent}", "", "", "", "unknown", ""])
    print_table(["Checkpoint", "Experiment", "Trial", "Steps", "State", "Created"], rows)
    typer.echo()
    print_table(
        ["Experiment", "Name", "Context SHA-256"],
        ([e.id, e.name, e.context_sha256 or ""] for e in found.experiments),
    )
    typer.echo()
    print_table(
        ["Trial", "Experiment", "Hyperparameters", "Warm start"],
        (
            [t.id, t.experiment_id, json.dumps(dict(t.hparams), sort_keys=True), t.warm_start_checkpoint]
            for t in found.trials
        ),
    )


@app.command()
def delete(
    ctx: typer.Context,
    checkpoint_uuids: Annotated[
        list[str],
        typer.Argument(
            metavar="UUID...",
            help="Checkpoint UUIDs (also comma-separated, as Determined).",
            show_default=False,
        ),
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete checkpoints' files; each shows DELETED once its storage is gone (refused if registered)."""
    uuids = [u.strip() for arg in checkpoint_uuids for u in arg.split(",") if u.strip()]
    if not uuids:
        raise CliError("give at least one checkpoint UUID")
    if not yes:
        what = f"checkpoint {uuids[0]}" if len(uuids) == 1 else f"{len(uuids)} checkpoints"
        typer.confirm(f"Delete {what} from storage?", abort=True)
    c = client(ctx)
    # One at a time, in order: the first refusal stops with one line and the rest stay untouched.
    deleted = []
    for checkpoint_uuid in uuids:
        ckpt = c.delete_checkpoint(checkpoint_uuid)
        deleted.append(ckpt)
        if as_json:
            continue
        if ckpt.state == "DELETED":
            typer.echo(f"Checkpoint {ckpt.uuid} is already deleted")
        else:
            typer.echo(f"Checkpoint {ckpt.uuid} will be deleted")
    if as_json:
        print_masked_json(deleted[0].raw if len(deleted) == 1 else [ckpt.raw for ckpt in deleted])


app.command("rm", hidden=True)(delete)


def _open_checkpoint(ctx: typer.Context, checkpoint_uuid: str) -> tuple[Any, dict[str, Any]]:
    """The storage and manifest of a registered checkpoint; the master's copy of the manifest."""
    # The engine (and stalwart.core) load only for these commands: `stalwart --help` stays quick.
    from stalwart.checkpoint._registered import open_registered
    from stalwart.core import CoreError

    try:
        return open_registered(client(ctx).get_checkpoint(checkpoint_uuid))
    except (CoreError, OSError) as exc:
        raise CliError(str(exc)) from None


@app.command()
def verify(
    ctx: typer.Context,
    checkpoint_uuid: Annotated[
        str, typer.Argument(metavar="UUID", help="Checkpoint UUID.", show_default=False)
    ],
) -> None:
    """Re-read every chunk of a checkpoint from its storage and check it against the manifest."""
    from stalwart.checkpoint import verify_checkpoint
    from stalwart.core import CoreError

    storage, manifest = _open_checkpoint(ctx, checkpoint_uuid)
    try:
        verify_checkpoint(storage, manifest)
    except (CoreError, OSError) as exc:
        raise CliError(str(exc)) from None
    finally:
        storage.close()
    files = manifest["files"]
    chunks = {chunk["digest"] for entry in files for chunk in entry["chunks"]}
    typer.echo(
        f"OK {manifest['uuid']}: {len(files)} files, {len(chunks)} chunks, "
        f"{fmt_size(int(manifest.get('size') or 0))} verified"
    )


@app.command()
def download(
    ctx: typer.Context,
    checkpoint_uuid: Annotated[
        str, typer.Argument(metavar="UUID", help="Checkpoint UUID.", show_default=False)
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            "-o",
            "--output",
            help="Directory to write into [default: checkpoints/UUID].",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        DownloadFormat,
        typer.Option("--format", help="files: the checkpoint's files; safetensors: its tensors in one file."),
    ] = DownloadFormat.files,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the path written.")] = False,
) -> None:
    """Write a verified copy of a checkpoint into a directory (checkpoints/UUID unless -o)."""
    target, message = write_checkpoint(ctx, checkpoint_uuid, output, fmt)
    typer.echo(str(target) if quiet else message)


def write_checkpoint(
    ctx: typer.Context, checkpoint_uuid: str, output: Path | None, fmt: DownloadFormat = DownloadFormat.files
) -> tuple[Path, str]:
    """Restore one checkpoint, verified, into ``output`` (default checkpoints/UUID); returns the
    path written and a one-line report. Shared by ``c download``, ``t download`` and ``e download``."""
    from stalwart.checkpoint import export_safetensors, restore_directory
    from stalwart.core import CoreError

    storage, manifest = _open_checkpoint(ctx, checkpoint_uuid)
    # Determined's default place, so scripts written for `det checkpoint download` find it.
    output = output if output is not None else Path("checkpoints") / str(manifest["uuid"])
    try:
        if fmt is DownloadFormat.safetensors:
            target = output / "model.safetensors"
            names = export_safetensors(storage, manifest, target)
            return target, f"Wrote {len(names)} tensors of {manifest['uuid']} to {target}"
        restore_directory(storage, manifest, output)
        return output, f"Wrote {len(manifest['files'])} files of {manifest['uuid']} to {output}"
    except (CoreError, OSError) as exc:
        raise CliError(str(exc)) from None
    finally:
        storage.close()
