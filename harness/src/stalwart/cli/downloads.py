"""``trial download`` and ``experiment download``: Determined's ways to fetch a trial's or an
experiment's best checkpoints without looking up their UUIDs first."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stalwart.cli import experiment, trial
from stalwart.cli._errors import CliError
from stalwart.cli._shared import client
from stalwart.cli.checkpoint import write_checkpoint
from stalwart.client import Checkpoint
from stalwart.client._ranking import best_checkpoints

OutputDir = Annotated[
    Path | None,
    typer.Option("--output-dir", "-o", help="Directory to write into.", show_default=False),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the paths written.")]


def _write(ctx: typer.Context, checkpoint: Checkpoint, output: Path | None, quiet: bool) -> None:
    target, message = write_checkpoint(ctx, checkpoint.uuid, output)
    typer.echo(str(target) if quiet else message)


@trial.app.command("download")
def download_trial(
    ctx: typer.Context,
    trial_id: trial.TrialId,
    latest: Annotated[bool, typer.Option("--latest", help="The trial's latest checkpoint.")] = False,
    best: Annotated[bool, typer.Option("--best", help="Its best by the searcher metric.")] = False,
    uuid: Annotated[
        str | None, typer.Option("--uuid", help="This checkpoint of the trial.", show_default=False)
    ] = None,
    output: OutputDir = None,
    quiet: Quiet = False,
) -> None:
    """Download one of a trial's checkpoints (checkpoints/UUID unless -o), as `det trial download`."""
    if sum((latest, best, uuid is not None)) != 1:
        raise CliError("give exactly one of --latest, --best, --uuid UUID")
    api = client(ctx)
    found = api.get_trial(trial_id)
    checkpoints = [
        c
        for c in api.list_checkpoints(found.experiment_id)
        if c.trial_id == trial_id and c.state == "COMPLETED"
    ]
    if uuid is not None:
        chosen = [c for c in checkpoints if c.uuid == uuid]
    elif best:
        chosen = best_checkpoints(checkpoints, api.get_experiment(found.experiment_id).config, 1)
    else:
        # Listed oldest first, so a stable sort keeps the newest last among equal steps.
        chosen = sorted(checkpoints, key=lambda c: c.steps_completed)[-1:]
    if not chosen:
        what = (
            f"checkpoint {uuid}"
            if uuid
            else "best checkpoint (with a searcher metric)"
            if best
            else "checkpoint"
        )
        raise CliError(f"trial {trial_id} has no completed {what}")
    _write(ctx, chosen[0], output, quiet)


@experiment.app.command("download")
def download_experiment(
    ctx: typer.Context,
    experiment_id: experiment.ExperimentId,
    top_n: Annotated[
        int, typer.Option("--top-n", min=1, help="How many of the best checkpoints.", show_default=True)
    ] = 1,
    output: Annotated[
        Path,
        typer.Option("--output-dir", "-o", help="Each checkpoint goes to DIR/UUID."),
    ] = Path("checkpoints"),
    quiet: Quiet = False,
) -> None:
    """Download the experiment's N best checkpoints by the searcher metric, as `det e download`."""
    api = client(ctx)
    exp = api.get_experiment(experiment_id)
    chosen = best_checkpoints(api.list_checkpoints(experiment_id), exp.config, top_n)
    if not chosen:
        raise CliError(f"experiment {experiment_id} has no checkpoint with a searcher metric")
    for checkpoint in chosen:
        _write(ctx, checkpoint, output / checkpoint.uuid, quiet)
