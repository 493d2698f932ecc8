"""``stalwart trial`` (alias ``t``): the trials of an experiment, their metrics and logs."""

import json
import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import typer

from stalwart.cli._errors import EXIT_INTERRUPTED, CliError
from stalwart.cli._shared import (
    JsonOption,
    client,
    fmt_time,
    print_csv,
    print_fields,
    print_json,
    print_table,
)
from stalwart.client import Client, LogLine, Trial, TrialRun

app = typer.Typer(help="Inspect trials (state, metrics, logs) and kill one.", no_args_is_help=True)

TrialId = Annotated[int, typer.Argument(min=1, help="Trial id.", show_default=False)]


class LogLevel(StrEnum):
    TRACE = "TRACE"
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


class StdType(StrEnum):
    stdout = "stdout"
    stderr = "stderr"


FollowOption = Annotated[
    bool, typer.Option("--follow", "-f", help="Keep printing new lines until the trial stops running.")
]
TailOption = Annotated[
    int | None, typer.Option(min=1, max=100_000, help="Start at the last N lines.", show_default=False)
]


def fmt_metric(value: float | None) -> str:
    if value is None:
        return ""
    return str(value) if math.isnan(value) or math.isinf(value) else f"{value:.6g}"


def searcher_metric(config: Mapping[str, Any]) -> str:
    """The name of the metric the searcher ranks by, for column headings."""
    searcher = config.get("searcher")
    return str(searcher.get("metric") or "validation") if isinstance(searcher, Mapping) else "validation"


def print_trials(trials: Iterable[Trial], metric: str, *, hparams: bool = False, csv: bool = False) -> None:
    columns = ["Trial", "State", "Restarts", "Steps", f"Best {metric}", "Latest checkpoint"]
    rows = []
    for t in trials:
        row: list[Any] = [
            t.id,
            t.state,
            t.restarts,
            t.steps_completed,
            fmt_metric(t.best_validation),
            t.latest_checkpoint,
        ]
        if hparams:
            row.append(json.dumps(dict(t.hparams), sort_keys=True))
        rows.append(row)
    (print_csv if csv else print_table)([*columns, "Hyperparameters"] if hparams else columns, rows)


def print_runs(runs: Iterable[TrialRun]) -> None:
    """One row per run: where and when it ran, how it ended and the checkpoint it started from."""
    print_table(
        ["Run", "Agent", "State", "Started", "Ended", "Exit code", "Exit reason", "Restored checkpoint"],
        (
            [
                r.run_id,
                r.agent_id,
                r.state,
                fmt_time(r.started_at),
                fmt_time(r.ended_at),
                r.exit_code,
                r.exit_reason,
                r.restored_checkpoint or ("" if r.started_at is None else "none (from scratch)"),
            ]
            for r in runs
        ),
    )


def fmt_log(line: LogLine) -> str:
    where = f"[rank {line.rank}]" + (" [stderr]" if line.stream == "stderr" else "")
    return f"{fmt_time(line.ts)} {where} {line.message}"


def print_logs(
    c: Client, trial_id: int, *, follow: bool, tail: int | None, as_json: bool, **filters: Any
) -> None:
    """Print a trial's log lines (one JSON object per line with ``as_json``); Ctrl-C stops quietly.

    ``filters`` are ``iter_trial_logs``'s: head, rank_ids, stdtypes, level, timestamp_before/after.
    """
    try:
        for line in c.iter_trial_logs(trial_id, follow=follow, tail=tail, **filters):
            typer.echo(json.dumps(dict(line.raw)) if as_json else fmt_log(line))
    except KeyboardInterrupt:
        # Stopping a follow is how it is meant to end: no message, only the conventional code.
        raise typer.Exit(EXIT_INTERRUPTED) from None


@app.command("list")
def list_(
    ctx: typer.Context,
    experiment_id: Annotated[int, typer.Argument(min=1, help="Experiment id.", show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """List the trials of an experiment."""
    show_trials(client(ctx), experiment_id, as_json=as_json)


def show_trials(c: Client, experiment_id: int, *, as_json: bool, as_csv: bool = False) -> None:
    """An experiment's trials with their hyperparameters: `trial list` and `experiment list-trials`."""
    trials = c.list_trials(experiment_id)
    if as_json:
        print_json([t.raw for t in trials])
        return
    print_trials(trials, searcher_metric(c.get_experiment(experiment_id).config), hparams=True, csv=as_csv)


app.command("ls", hidden=True)(list_)


@app.command()
def describe(ctx: typer.Context, trial_id: TrialId, as_json: JsonOption = False) -> None:
    """Show one trial (state, restarts, steps, best metric, latest checkpoint) and each of its runs."""
    c = client(ctx)
    trial = c.get_trial(trial_id)
    runs = c.list_trial_runs(trial_id)
    if as_json:
        print_json({**trial.raw, "runs": [r.raw for r in runs]})
        return
    metric = searcher_metric(c.get_experiment(trial.experiment_id).config)
    print_fields(
        {
            "ID": trial.id,
            "Experiment": trial.experiment_id,
            "State": trial.state,
            "Restarts": trial.restarts,
            "Run": trial.run_id,
            "Steps": trial.steps_completed,
            "Progress": f"{trial.progress:.0%}",
            f"Best {metric}": fmt_metric(trial.best_validation),
            "Latest checkpoint": trial.latest_checkpoint,
            "Warm start": trial.warm_start_checkpoint,
            "Hyperparameters": json.dumps(dict(trial.hparams), sort_keys=True),
            "Seed": trial.seed,
            "End reason": trial.end_reason,
            "Created": fmt_time(trial.created_at),
            "Ended": fmt_time(trial.ended_at),
        }
    )
    if runs:
        typer.echo()
        print_runs(runs)


@app.command()
def metrics(
    ctx: typer.Context,
    trial_id: TrialId,
    group: Annotated[
        str | None,
        typer.Option(help="Only this group, e.g. training or validation.", show_default=False),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Print the metrics a trial reported, one row per report."""
    reports = client(ctx).trial_metrics(trial_id, group=group)
    if as_json:
        print_json({"items": [m.raw for m in reports]})
        return
    print_table(
        ["Group", "Steps", "Run", "Values", "Reported"],
        (
            [
                m.group,
                m.steps_completed,
                m.run_id,
                ", ".join(f"{k}={fmt_metric(v) if isinstance(v, float) else v}" for k, v in m.values.items()),
                fmt_time(m.reported_at),
            ]
            for m in reports
        ),
    )


@app.command()
def logs(
    ctx: typer.Context,
    trial_id: TrialId,
    follow: FollowOption = False,
    tail: TailOption = None,
    head: Annotated[
        int | None, typer.Option(min=1, max=100_000, help="Only the first N lines.", show_default=False)
    ] = None,
    rank_ids: Annotated[
        list[int] | None,
        typer.Option("--rank-id", min=0, help="Only this rank's lines (repeatable).", show_default=False),
    ] = None,
    stdtypes: Annotated[
        list[StdType] | None,
        typer.Option("--stdtype", help="Only this stream's lines (repeatable).", show_default=False),
    ] = None,
    level: Annotated[
        LogLevel | None,
        typer.Option(
            help="Only lines of this level or above (a line without 'LEVEL:' counts as INFO).",
            show_default=False,
            case_sensitive=False,
        ),
    ] = None,
    timestamp_before: Annotated[
        str | None,
        typer.Option(
            help="Only lines written before this ISO time (UTC unless a zone is given).", show_default=False
        ),
    ] = None,
    timestamp_after: Annotated[
        str | None, typer.Option(help="Only lines written after this ISO time.", show_default=False)
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print each line as one JSON object (NDJSON).")
    ] = False,
) -> None:
    """Print a trial's logs; with -f keep following until the trial stops running."""
    if head is not None and tail is not None:
        raise CliError("give --head or --tail, not both")
    before, after = (
        _moment("--timestamp-before", timestamp_before),
        _moment("--timestamp-after", timestamp_after),
    )
    print_logs(
        client(ctx),
        trial_id,
        follow=follow,
        tail=tail,
        as_json=as_json,
        head=head,
        rank_ids=rank_ids or (),
        stdtypes=[s.value for s in stdtypes or ()],
        level=level.value if level else None,
        timestamp_before=before,
        timestamp_after=after,
    )


def _moment(option: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{option}: {text!r} is not an ISO time such as 2026-12-01T09:30:00Z") from None


@app.command()
def kill(ctx: typer.Context, trial_id: TrialId, as_json: JsonOption = False) -> None:
    """Stop this trial at once, without a checkpoint; it ends CANCELED and its experiment goes on."""
    trial = client(ctx).kill_trial(trial_id)
    if as_json:
        print_json(trial.raw)
    elif trial.state == "ACTIVE":
        typer.echo(f"Killing trial {trial.id}")
    else:
        typer.echo(f"Trial {trial.id} is {trial.state}")
