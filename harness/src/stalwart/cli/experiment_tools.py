"""Determined's experiment verbs beyond create and the lifecycle, registered on ``experiment``:
``list-trials`` (``lt``), ``list-checkpoints`` (``lc``), ``download-model-def`` and
``set priority|weight|max-slots``. Kept apart so ``experiment.py`` stays one sitting long.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from stalwart.cli._errors import CliError
from stalwart.cli._shared import (
    CsvOption,
    JsonOption,
    client,
    fmt_size,
    fmt_time,
    print_csv,
    print_masked_json,
    print_table,
)
from stalwart.cli.experiment import ExperimentId, app, set_app
from stalwart.cli.trial import fmt_metric, searcher_metric, show_trials
from stalwart.client import Experiment
from stalwart.client._ranking import best_checkpoints


@app.command("list-trials")
def list_trials(
    ctx: typer.Context, experiment_id: ExperimentId, as_csv: CsvOption = False, as_json: JsonOption = False
) -> None:
    """List the experiment's trials with their hyperparameters (`trial list` by Determined's name)."""
    show_trials(client(ctx), experiment_id, as_json=as_json, as_csv=as_csv)


app.command("lt", hidden=True)(list_trials)


@app.command("list-checkpoints")
def list_checkpoints(
    ctx: typer.Context,
    experiment_id: ExperimentId,
    best: Annotated[
        int | None,
        typer.Option(
            "--best", min=1, help="Only the N best by the searcher metric, best first.", show_default=False
        ),
    ] = None,
    as_csv: CsvOption = False,
    as_json: JsonOption = False,
) -> None:
    """List the experiment's checkpoints, oldest first, or its --best N."""
    c = client(ctx)
    checkpoints = c.list_checkpoints(experiment_id)
    config = c.get_experiment(experiment_id).config
    if best is not None:
        checkpoints = best_checkpoints(checkpoints, config, best)
    if as_json:
        print_masked_json([ckpt.raw for ckpt in checkpoints])
        return
    (print_csv if as_csv else print_table)(
        ["Trial", "Steps", "State", f"Validation {searcher_metric(config)}", "UUID", "Size", "Created"],
        (
            [
                ckpt.trial_id,
                ckpt.steps_completed,
                ckpt.state,
                fmt_metric(ckpt.searcher_metric),
                ckpt.uuid,
                ckpt.size if as_csv else fmt_size(ckpt.size),
                fmt_time(ckpt.created_at),
            ]
            for ckpt in checkpoints
        ),
    )


app.command("lc", hidden=True)(list_checkpoints)


@app.command("download-model-def")
def download_model_def(
    ctx: typer.Context,
    experiment_id: ExperimentId,
    output_dir: Annotated[
        Path,
        typer.Option("--output-dir", "-o", help="Directory to write into.", file_okay=False),
    ] = Path("."),
) -> None:
    """Save the code the experiment was created with as experiment_ID_model_def.tgz."""
    c = client(ctx)
    exp = c.get_experiment(experiment_id)
    if not exp.context_sha256:
        raise CliError(f"experiment {experiment_id} was created without a model directory")
    data = c.download_context(exp.context_sha256)
    if not output_dir.is_dir():
        raise CliError(f"output directory {output_dir} does not exist")
    target = output_dir / f"experiment_{experiment_id}_model_def.tgz"
    target.write_bytes(data)
    typer.echo(f"Wrote {target} ({fmt_size(len(data))})")


def _resources_set(exp: Experiment, as_json: bool, key: str) -> None:
    if as_json:
        print_masked_json(exp.raw)
        return
    resources = exp.config.get("resources") or {}
    typer.echo(f"Experiment {exp.id} {key} is now {resources.get(key)}")


@set_app.command("priority")
def set_priority(
    ctx: typer.Context,
    experiment_id: ExperimentId,
    priority: Annotated[
        int, typer.Argument(min=1, max=99, help="1-99; lower runs first.", show_default=False)
    ],
    as_json: JsonOption = False,
) -> None:
    """Change the scheduling priority; queued and running trials take it at once."""
    exp = client(ctx).set_experiment_resources(experiment_id, priority=priority)
    _resources_set(exp, as_json, "priority")


@set_app.command("weight")
def set_weight(
    ctx: typer.Context,
    experiment_id: ExperimentId,
    weight: Annotated[float, typer.Argument(help="Fair-share weight, above 0.", show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """Change the fair-share weight (stored in resources.weight; the scheduler does not use it yet)."""
    if not math.isfinite(weight) or weight <= 0:
        raise CliError(f"weight must be a number above 0, not {weight}")
    exp = client(ctx).set_experiment_resources(experiment_id, weight=weight)
    _resources_set(exp, as_json, "weight")


@set_app.command("max-slots")
def set_max_slots(
    ctx: typer.Context,
    experiment_id: ExperimentId,
    max_slots: Annotated[
        int,
        typer.Argument(min=1, help="Most slots the experiment's trials hold at once.", show_default=False),
    ],
    as_json: JsonOption = False,
) -> None:
    """Cap the slots the whole experiment holds; the scheduler starts no run beyond it."""
    exp = client(ctx).set_experiment_resources(experiment_id, max_slots=max_slots)
    _resources_set(exp, as_json, "max_slots")
