"""``stalwart checkpoint`` (alias ``c``): the checkpoints trials registered."""

import json
from typing import Annotated

import typer

from stalwart.cli._shared import JsonOption, client, fmt_size, fmt_time, print_fields, print_json, print_table

app = typer.Typer(help="List and inspect checkpoints.", no_args_is_help=True)


@app.command("list")
def list_(
    ctx: typer.Context,
    experiment_id: Annotated[int, typer.Argument(min=1, help="Experiment id.", show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """List the checkpoints of an experiment's trials, oldest first."""
    checkpoints = client(ctx).list_checkpoints(experiment_id)
    if as_json:
        print_json([ckpt.raw for ckpt in checkpoints])
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
        print_json(ckpt.raw)
        return
    print_fields(
        {
            "UUID": ckpt.uuid,
            "Trial": ckpt.trial_id,
            "Steps": ckpt.steps_completed,
            "State": ckpt.state,
            "Size": fmt_size(ckpt.size),
            "Parent": ckpt.parent_uuid,
            "Allocation": ckpt.allocation_id,
            "Storage": json.dumps(dict(ckpt.storage), sort_keys=True),
            "Metadata": json.dumps(dict(ckpt.metadata), sort_keys=True),
            "Created": fmt_time(ckpt.created_at),
        }
    )
    if ckpt.files:
        typer.echo()
        print_table(["File", "Size", "SHA-256"], ([f.path, fmt_size(f.size), f.sha256] for f in ckpt.files))
